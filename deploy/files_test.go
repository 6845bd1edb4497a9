package deploy

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// One result per file, in order, each with its own findings: a broken file
// does not hide the verdict of the others.
func TestCheckFilesOnePerFile(t *testing.T) {
	envoy := readFile(t, filepath.Join(envoyConfigDir, "envoy.yaml"))
	manifests := readFile(t, filepath.Join(envoyConfigDir, "istio", "demo.yaml"))
	rs := CheckFiles(
		File{"envoy.yaml", envoy},
		File{"broken.yaml", []byte("listeners:\n- name: a\n  address: [\n")},
		File{"demo.yaml", manifests},
		File{"docker-compose.yaml", readFile(t, filepath.Join(envoyConfigDir, "docker-compose.yaml"))},
		File{"prometheus.yml", readFile(t, filepath.Join(envoyConfigDir, "prometheus.yml"))},
		File{"notes.yaml", []byte("title: x\nbody: y\n")},
	)
	if len(rs) != 6 {
		t.Fatalf("got %d results", len(rs))
	}
	type want struct {
		kind       Kind
		what       string
		errs       []string
		notChecked string
	}
	for i, w := range []want{
		{kind: KindBootstrap, what: "Envoy bootstrap"},
		{kind: KindUnknown, what: "unknown", errs: []string{
			"broken.yaml: line 4, column 1: YAML syntax error: did not find expected node content"}},
		{kind: KindKubernetes, what: "Kubernetes: Namespace, Service, Deployment"},
		{kind: KindCompose, what: "Docker Compose file", notChecked: "breeze validate does not check Compose files: `docker compose config` does"},
		{kind: KindPrometheus, what: "Prometheus config", notChecked: "breeze validate does not check Prometheus configs: `promtool check config` does"},
		{kind: KindUnknown, what: "unknown", errs: []string{
			"notes.yaml: cannot tell what this is from its top-level keys (body, title): not an Envoy bootstrap, Kubernetes manifest, Breeze runner, plugin_config, proxy config or service description"}},
	} {
		r := rs[i]
		var errs []string
		for _, e := range r.Errors {
			errs = append(errs, e.Error())
		}
		if r.Kind != w.kind || r.What() != w.what || !slices.Equal(errs, w.errs) || r.NotChecked != w.notChecked {
			t.Errorf("%s: got %s (%s) errors %q not checked %q\nwant %s (%s) errors %q not checked %q",
				r.Name, r.Kind, r.What(), errs, r.NotChecked, w.kind, w.what, w.errs, w.notChecked)
		}
	}
}

// A syntax error in a later document of a Kubernetes file is reported at
// its line in the file, and the other documents are still checked.
func TestSyntaxErrorInALaterDocument(t *testing.T) {
	data := "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n# b\napiVersion: v1\nkind: Service\nmetadata: {name: b\n---\napiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: c, namespaces: x}\nspec: {}\n"
	r := CheckFiles(File{"m.yaml", []byte(data)})[0]
	got := errors.Join(r.Errors...).Error()
	want := "m.yaml: line 9, column 1: YAML syntax error: did not find expected ',' or '}' (while parsing a flow mapping that starts at line 8, column 11)\n" +
		"m.yaml: EnvoyFilter c: metadata.namespaces: unknown field of a Kubernetes ObjectMeta; did you mean namespace?"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

// A finding across files belongs to the file of the EnvoyFilter it names.
func TestCheckFilesAcrossFiles(t *testing.T) {
	rendered := string(readFile(t, filepath.Join(envoyConfigDir, "istio", "greeter-envoyfilters.yaml")))
	outbound := rendered[:strings.Index(rendered, "\n---\n")+1]
	listenerOnly := outbound[:strings.Index(outbound, "  - applyTo: CLUSTER")] + "  workloadSelector:\n    labels:\n      app: consumer\n"
	rs := CheckFiles(File{"envoy.yaml", readFile(t, filepath.Join(envoyConfigDir, "envoy.yaml"))}, File{"a.yaml", []byte(listenerOnly)})
	if len(rs[0].Errors) != 0 || len(rs[1].Errors) != 1 || !strings.HasPrefix(rs[1].Errors[0].Error(), `a.yaml: EnvoyFilter greeter-breeze-outbound: spec.configPatches[0]: no "plainText" cluster`) {
		t.Fatalf("got %v / %v", rs[0].Errors, rs[1].Errors)
	}
}
