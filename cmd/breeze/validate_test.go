package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/breeze-mesh/breeze/deploy"
)

// runValidate runs validate on paths and returns its output, with dir
// (where the files are) left out of it.
func runValidate(t *testing.T, dir string, paths ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = validateTo(deploy.Options{}, paths, &out, &errOut)
	clean := func(s string) string { return strings.ReplaceAll(s, dir+string(filepath.Separator), "") }
	return clean(out.String()), clean(errOut.String()), err
}

// Every file gets its verdict, also when another fails; each mistake is
// one line, saying how to fix it; files Breeze ships but does not check
// say so.
func TestValidateVerdictForEveryFile(t *testing.T) {
	demo, err := os.ReadFile("demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d := t.TempDir()
	files := map[string]string{
		"ok.yaml":       string(demo),
		"syntax.yaml":   strings.Replace(string(demo), "    codec: dubbo\n", "    codec: dubbo\n   stray: x\n", 1),
		"mistakes.yaml": strings.Replace(string(demo), "lb_policy: ROUND_ROBIN", "lb_policy: ROUNDROBIN", 1),
		"two-listeners.yaml": string(demo) + "- name: dubbo-two\n  address: 127.0.0.1:20880\n" +
			"  proxy: {stat_prefix: two, codec: dubbo, route_config: {routes: [{route: {cluster: c}}]}, clusters: [{name: c, connect_timeout: 1s, endpoints: [{address: 127.0.0.1, port: 1}]}]}\n",
		"warned.yaml": strings.Replace(string(demo), "    - name: greeter\n", "    - name: greeter\n      connect_timeout: 1s\n", 1),
	}
	for name, content := range files {
		if name != "ok.yaml" && content == string(demo) {
			t.Fatalf("%s: the edit no longer applies to demo.yaml; update this test", name)
		}
		if err := os.WriteFile(filepath.Join(d, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var paths []string
	for _, n := range []string{"ok.yaml", "syntax.yaml", "mistakes.yaml", "two-listeners.yaml", "warned.yaml"} {
		paths = append(paths, filepath.Join(d, n))
	}
	paths = append(paths, "../../envoy-config/docker-compose.yaml", "../../envoy-config/prometheus.yml")
	stdout, stderr, err := runValidate(t, d, paths...)

	wantOut := `ok.yaml: ok (Breeze runner config)
syntax.yaml: 1 error
mistakes.yaml: 1 error (Breeze runner config)
two-listeners.yaml: 1 error (Breeze runner config)
warned.yaml: ok, 1 warning (Breeze runner config)
../../envoy-config/docker-compose.yaml: not checked (Docker Compose file): breeze validate does not check Compose files: ` + "`docker compose config`" + ` does
../../envoy-config/prometheus.yml: not checked (Prometheus config): breeze validate does not check Prometheus configs: ` + "`promtool check config`" + ` does
`
	wantErr := `error: syntax.yaml: line 10, column 4: YAML syntax error: did not find expected key (while parsing a block mapping that starts at line 5, column 3)
error: mistakes.yaml: listeners[0].proxy.clusters[0].lb_policy: "ROUNDROBIN": lb_policy must be one of ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV; did you mean ROUND_ROBIN?
error: two-listeners.yaml: listeners[1].address: "127.0.0.1:20880": listeners[0] (dubbo-demo) already listens on 127.0.0.1:20880: the second bind would fail with "address already in use"; give each listener an address of its own
warning: warned.yaml: listeners[0].proxy.clusters[0].connect_timeout: 1s: deprecated and ignored: Envoy's plainText cluster sets the connect timeout of every upstream connection Breeze opens (breeze run: 5s); set connect_timeout on the plainText cluster instead, and remove this field
`
	if stdout != wantOut {
		t.Errorf("stdout:\n%s\nwant:\n%s", stdout, wantOut)
	}
	if stderr != wantErr {
		t.Errorf("stderr:\n%s\nwant:\n%s", stderr, wantErr)
	}
	if err == nil || err.Error() != "validate: 3 errors in 3 of 7 files" {
		t.Errorf("got %v", err)
	}
}

// A directory of mesh YAML: every cross-object mistake, with its file and
// object; errors make validate fail, warnings alone do not.
func TestValidateMeshDirectory(t *testing.T) {
	const dir = "../../controlplane/testdata/broken-mesh"
	stdout, stderr, err := runValidate(t, dir, dir)
	wantOut := `destination-rule.yaml: ok (Kubernetes: DestinationRule)
envoy-filter.yaml: ok, 2 warnings (Kubernetes: EnvoyFilter)
kubernetes.yaml: ok, 1 warning (Kubernetes: Service, MetaRouter)
meta-router.yaml: 2 errors, 2 warnings (Kubernetes: MetaRouter)
not-yaml.yaml: 1 error
service-entry.yaml: ok, 1 warning (Kubernetes: ServiceEntry)
`
	wantErr := `warning: envoy-filter.yaml: EnvoyFilter demo/greeter-tcp: spec.configPatches[0].match.listener.name: "240.240.0.1_20881": no Service or ServiceEntry among these files has address 240.240.0.1 and port 20881: this patch applies to no listener; did you mean 240.240.0.1_20880?
warning: envoy-filter.yaml: EnvoyFilter demo/greeter-tcp: spec.configPatches[1].match.listener.filterChain.destinationPort: 20882: no Service or ServiceEntry among these files has this target port: this patch applies to no inbound filter chain
warning: kubernetes.yaml#2: MetaRouter demo/echo: spec.hosts[0]: "echo.demo.svc.cluster.local": declared by kubernetes.yaml#1: Service demo/echo, but Breeze's control plane serves the hosts of ServiceEntries only: nothing is served for it; add a ServiceEntry with its endpoints
error: meta-router.yaml#3: MetaRouter demo/greeter-admin: spec.routes[0].requestMutations: unknown field (metaprotocol.aeraki.io.v1alpha1.MetaRoute has no field "requestMutations"); did you mean requestMutation?
error: meta-router.yaml#1: MetaRouter demo/greeter: spec.routes[0].route[0].destination.subset: "v3": destination-rule.yaml: DestinationRule demo/greeter defines no such subset (only v1, v2)
warning: meta-router.yaml#2: MetaRouter demo/greeter-typo: spec.hosts[0]: "org.breeze.Greter": no ServiceEntry or Service declares this host: nothing is served for it; did you mean org.breeze.Greeter?
warning: meta-router.yaml#1: MetaRouter demo/greeter: spec.routes[1].route: the weights add up to 110, not 100: Breeze takes them as relative and splits traffic 72.7% / 27.3%; make them add up to 100
error: not-yaml.yaml: line 4, column 5: YAML syntax error: did not find expected ',' or '}' (while parsing a flow mapping that starts at line 3, column 11)
warning: service-entry.yaml: ServiceEntry demo/greeter: spec.subjectAltNames: not applied by Breeze: its upstream connections take the TLS of Envoy's plainText cluster, which authenticates peers as mesh members; ignored
`
	if stdout != wantOut {
		t.Errorf("stdout:\n%s\nwant:\n%s", stdout, wantOut)
	}
	if stderr != wantErr {
		t.Errorf("stderr:\n%s\nwant:\n%s", stderr, wantErr)
	}
	if err == nil || err.Error() != "validate: 3 errors in 2 of 6 files" {
		t.Errorf("got %v", err)
	}

	// Warnings alone pass.
	_, _, err = runValidate(t, dir, filepath.Join(dir, "service-entry.yaml"), filepath.Join(dir, "destination-rule.yaml"), filepath.Join(dir, "envoy-filter.yaml"))
	if err != nil {
		t.Errorf("warnings only: %v", err)
	}
}

// A command line mistake is a usage error (exit status 2), not a failed
// check.
func TestValidateUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"-nosuchflag", "x.yaml"}} {
		if err := validate(args); !errors.As(err, new(*usageError)) {
			t.Errorf("validate(%q) = %v, want a usage error", args, err)
		}
	}
	if err := validate([]string{"no-such-file.yaml"}); err == nil || errors.As(err, new(*usageError)) {
		t.Errorf("a missing file: got %v, want a plain error", err)
	}
}

// Circuit breakers and outlier detection are checked where they are
// written: a runner config's clusters (config.Validate, Breeze's field
// names) and a DestinationRule (Istio's), each error naming the field and
// the value.
func TestValidateResilience(t *testing.T) {
	demo, err := os.ReadFile("demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	runner := strings.Replace(string(demo), "      lb_policy: ROUND_ROBIN ",
		"      circuit_breakers: {max_requests: 100, retry_budget: {budget_percent: 150}}\n"+
			"      outlier_detection: {consecutive_errors: 3, interval: 0s, max_ejection_percent: 120}\n"+
			"      lb_policy: ROUND_ROBIN ", 1)
	if runner == string(demo) {
		t.Fatal("the edit no longer applies to demo.yaml; update this test")
	}
	mesh := `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: greeter, namespace: demo}
spec:
  hosts: [org.breeze.Greeter]
  ports: [{number: 20880, name: tcp-dubbo}]
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter, namespace: demo}
spec:
  host: org.breeze.Greeter
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: -1}}
    outlierDetection: {consecutive5xxErrors: 3, baseEjectionTime: 0.5ms, maxEjectionPercent: 101}
`
	d := t.TempDir()
	for name, content := range map[string]string{"runner.yaml": runner, "mesh.yaml": mesh} {
		if err := os.WriteFile(filepath.Join(d, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stdout, stderr, err := runValidate(t, d, filepath.Join(d, "runner.yaml"), filepath.Join(d, "mesh.yaml"))
	wantOut := `runner.yaml: 3 errors (Breeze runner config)
mesh.yaml: 3 errors (Kubernetes: ServiceEntry, DestinationRule)
`
	wantErr := `error: runner.yaml: listeners[0].proxy.clusters[0].circuit_breakers.retry_budget.budget_percent: 150: must be 0–100
error: runner.yaml: listeners[0].proxy.clusters[0].outlier_detection.interval: 0s: must be more than 0
error: runner.yaml: listeners[0].proxy.clusters[0].outlier_detection.max_ejection_percent: 120: must be 0–100
error: mesh.yaml#2: DestinationRule demo/greeter: spec.trafficPolicy.connectionPool.tcp.maxConnections: -1: must not be negative
error: mesh.yaml#2: DestinationRule demo/greeter: spec.trafficPolicy.outlierDetection.maxEjectionPercent: 101: must be 0–100
error: mesh.yaml#2: DestinationRule demo/greeter: spec.trafficPolicy.outlierDetection.baseEjectionTime: 500µs: must be at least 1ms
`
	if stdout != wantOut {
		t.Errorf("stdout:\n%s\nwant:\n%s", stdout, wantOut)
	}
	if stderr != wantErr {
		t.Errorf("stderr:\n%s\nwant:\n%s", stderr, wantErr)
	}
	if err == nil || err.Error() != "validate: 6 errors in 2 of 2 files" {
		t.Errorf("got %v", err)
	}
}
