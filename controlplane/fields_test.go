package controlplane

import (
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	metaprotocolv1alpha1 "github.com/aeraki-mesh/api/metaprotocol/v1alpha1"
	"google.golang.org/protobuf/reflect/protoreflect"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
)

// Every field of the API versions Breeze reads is in the table: applied,
// Istio's, or warned about with a reason of its own.
func TestEveryFieldHasAUse(t *testing.T) {
	seen := map[protoreflect.FullName]bool{}
	var walk func(md protoreflect.MessageDescriptor)
	walk = func(md protoreflect.MessageDescriptor) {
		if seen[md.FullName()] {
			return
		}
		seen[md.FullName()] = true
		fds := md.Fields()
		for i := range fds.Len() {
			fd := fds.Get(i)
			u, ok := fields[fd.FullName()]
			if !ok {
				t.Errorf("%s: not in the table", fd.FullName())
				continue
			}
			sub := fd.Message()
			if fd.IsMap() {
				sub = fd.MapValue().Message()
			}
			if u.applied && sub != nil && !strings.HasPrefix(string(sub.FullName()), "google.protobuf.") {
				walk(sub)
			}
		}
	}
	for _, m := range []protoreflect.ProtoMessage{&metaprotocolv1alpha1.MetaRouter{}, &networkingv1alpha3.DestinationRule{}, &networkingv1alpha3.ServiceEntry{}} {
		walk(m.ProtoReflect().Descriptor())
	}
}

// Every field that is set and that Breeze does not apply is named in a
// warning, once, by its path as the file writes it; the objects are used.
func TestFieldsNotAppliedAreWarned(t *testing.T) {
	router := metaRouter + `  gateways: [mesh, istio-system/ingress]
  exportTo: ["."]
`
	// Applied: no warning.
	router = strings.Replace(router, "    mirror: {host: org.example.Greeter, subset: v2}\n", "    mirror: {host: org.example.Greeter, subset: v2}\n    mirrorPercentage: {value: 10}\n", 1)
	rule := destinationRule + `  exportTo: ["."]
  workloadSelector: {matchLabels: {app: consumer}}
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting: {enabled: true}
    connectionPool:
      tcp: {maxConnections: 10, connectTimeout: 30ms, tcpKeepalive: {time: 7200s}, maxConnectionDuration: 1h, idleTimeout: 1h}
      http: {http1MaxPendingRequests: 5, maxRequestsPerConnection: 10, idleTimeout: 1h, h2UpgradePolicy: UPGRADE, maxConcurrentStreams: 100}
    outlierDetection: {baseEjectionTime: 15m, consecutiveErrors: 5, minHealthPercent: 50}
    tls: {mode: ISTIO_MUTUAL}
    tunnel: {protocol: CONNECT, targetHost: x, targetPort: 1}
    proxyProtocol: {version: V1}
    retryBudget: {minRetryConcurrency: 1}
    portLevelSettings: [{port: {number: 20880}, outlierDetection: {interval: 5m}, tls: {mode: DISABLE}}]
`
	rule = strings.Replace(rule, "  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}\n", "", 1)
	rule = strings.Replace(rule, "{consistentHash: {httpHeaderName: user}}", "{consistentHash: {httpHeaderName: user, minimumRingSize: 1024}}", 1)
	se := serviceEntry + `  addresses: [240.0.0.1]
  location: MESH_INTERNAL
  exportTo: ["*"]
  subjectAltNames: [spiffe://cluster.local/ns/demo/sa/greeter]
`
	se = strings.Replace(se, "locality: eu/eu-1, weight: 2}", "locality: eu/eu-1, weight: 2, network: n2, serviceAccount: greeter}", 1)
	d := dir(t, map[string]string{"greeter.yaml": se + "---\n" + rule, "router.yaml": router})
	tr, problems := read(t, d)
	var got []string
	for _, p := range problems {
		msg := strings.ReplaceAll(p.Error(), d+"/", "")
		if !p.Warning {
			t.Fatalf("error: %s", msg)
		}
		got = append(got, msg)
	}
	const mr, dr, sen = "router.yaml: MetaRouter demo/greeter: ", "greeter.yaml#2: DestinationRule demo/greeter: ", "greeter.yaml#1: ServiceEntry demo/greeter: "
	want := []string{
		sen + "spec.endpoints[0].network: not supported: Breeze dials every endpoint directly, without network gateways; ignored",
		sen + "spec.endpoints[0].serviceAccount: not applied by Breeze: its upstream connections take the TLS of Envoy's plainText cluster, which authenticates peers as mesh members; ignored",
		sen + "spec.exportTo: not used: Breeze serves every resource to every proxy that asks; ignored",
		sen + "spec.subjectAltNames: not applied by Breeze: its upstream connections take the TLS of Envoy's plainText cluster, which authenticates peers as mesh members; ignored",
		dr + "spec.trafficPolicy.loadBalancer.localityLbSetting: not supported by Breeze; ignored",
		dr + "spec.trafficPolicy.connectionPool.tcp.connectTimeout: not applied by Breeze: Envoy's plainText cluster dials its upstream connections, with its own settings; ignored",
		dr + "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive: not applied by Breeze: Envoy's plainText cluster dials its upstream connections, with its own settings; ignored",
		dr + "spec.trafficPolicy.connectionPool.tcp.maxConnectionDuration: not supported by Breeze; ignored",
		dr + "spec.trafficPolicy.connectionPool.tcp.idleTimeout: not applied by Breeze: its upstream connections stay open while the cluster has endpoints; ignored",
		dr + "spec.trafficPolicy.connectionPool.http.maxRequestsPerConnection: not supported by Breeze: its upstream connections multiplex requests and are not recycled by count; ignored",
		dr + "spec.trafficPolicy.connectionPool.http.idleTimeout: not applied by Breeze: its upstream connections stay open while the cluster has endpoints; ignored",
		dr + "spec.trafficPolicy.connectionPool.http.h2UpgradePolicy: an HTTP setting, nothing for Breeze's protocols; ignored",
		dr + "spec.trafficPolicy.connectionPool.http.maxConcurrentStreams: an HTTP setting, nothing for Breeze's protocols; ignored",
		dr + "spec.trafficPolicy.outlierDetection.consecutiveErrors: deprecated, and ignored by Istio since 1.7: use consecutive5xxErrors or consecutiveGatewayErrors; ignored",
		dr + "spec.trafficPolicy.outlierDetection.minHealthPercent: not supported by Breeze: it has no panic mode (maxEjectionPercent bounds the endpoints ejected); ignored",
		dr + "spec.trafficPolicy.tls: not applied by Breeze: the sidecar's own TLS settings carry its upstream connections; ignored",
		dr + "spec.trafficPolicy.portLevelSettings[0].tls: not applied by Breeze: the sidecar's own TLS settings carry its upstream connections; ignored",
		dr + "spec.trafficPolicy.tunnel: not supported by Breeze; ignored",
		dr + "spec.trafficPolicy.proxyProtocol: not supported by Breeze; ignored",
		dr + "spec.subsets[1].trafficPolicy.loadBalancer.consistentHash.minimumRingSize: Breeze's rings have a fixed size; ignored",
		dr + "spec.exportTo: not used: Breeze serves every resource to every proxy that asks; ignored",
		dr + "spec.workloadSelector: not used: Breeze's clusters apply to every proxy that asks; ignored",
		mr + "spec.exportTo: not used: Breeze serves every resource to every proxy that asks; ignored",
		// Applied (gateway.go), but naming a Gateway there is not.
		mr + `spec.gateways[1]: "istio-system/ingress": no such Gateway: these routes apply at no gateway until there is one`,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(tr.FailedRoutes)+len(tr.FailedClusters)+len(tr.FailedEndpoints) != 0 || tr.Resources.Routes["org.example.Greeter_20880"].GetRoutes()[0].GetName() != "gold" {
		t.Fatalf("the objects are not used: %v", tr.Resources.Routes)
	}
}

// A MetaRouter or DestinationRule for a host no ServiceEntry has has no
// effect: said so, not dropped silently; a host a Kubernetes Service
// declares is told apart from a misspelt one.
func TestRulesForHostsWithoutServiceEntry(t *testing.T) {
	files := map[string]string{
		"router.yaml": strings.Replace(metaRouter, "hosts: [org.example.Greeter]", "hosts: [org.example.Greeter, greeter.demo.svc.cluster.local, org.example.Greter]", 1),
		"dr.yaml":     strings.Replace(destinationRule, "host: org.example.Greeter", "host: greeter.demo.svc.cluster.local", 1),
		"se.yaml":     serviceEntry,
	}
	for _, withService := range []bool{false, true} {
		if withService {
			files["svc.yaml"] = "apiVersion: v1\nkind: Service\nmetadata: {name: greeter, namespace: demo}\nspec:\n  clusterIP: 10.96.20.80\n  ports: [{name: tcp-dubbo, port: 20880}]\n"
		}
		d := dir(t, files)
		_, problems := read(t, d)
		var got []string
		for _, p := range problems {
			got = append(got, strings.ReplaceAll(p.Error(), d+"/", ""))
		}
		want := []string{
			`dr.yaml: DestinationRule demo/greeter: spec.host: "greeter.demo.svc.cluster.local": no ServiceEntry or Service declares this host: nothing is served for it`,
			`router.yaml: MetaRouter demo/greeter: spec.hosts[1]: "greeter.demo.svc.cluster.local": no ServiceEntry or Service declares this host: nothing is served for it`,
			`router.yaml: MetaRouter demo/greeter: spec.hosts[2]: "org.example.Greter": no ServiceEntry or Service declares this host: nothing is served for it; did you mean org.example.Greeter?`,
		}
		if withService {
			want[0] = `dr.yaml: DestinationRule demo/greeter: spec.host: "greeter.demo.svc.cluster.local": declared by svc.yaml: Service demo/greeter, but Breeze's control plane serves the hosts of ServiceEntries only: nothing is served for it; add a ServiceEntry with its endpoints`
			want[1] = `router.yaml: MetaRouter demo/greeter: spec.hosts[1]: "greeter.demo.svc.cluster.local": declared by svc.yaml: Service demo/greeter, but Breeze's control plane serves the hosts of ServiceEntries only: nothing is served for it; add a ServiceEntry with its endpoints`
		}
		for _, w := range want {
			if !slices.Contains(got, w) {
				t.Errorf("no problem %s in:\n%s", w, strings.Join(got, "\n"))
			}
		}
	}
}

// logLines collects what a logger writes, line by line.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, strings.Split(strings.TrimSpace(string(b)), "\n")...)
	return len(b), nil
}

// take returns the lines containing s written since the last call.
func (l *logLines) take(s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	l.lines = nil
	return out
}

// A problem is logged once per version of its object: not again when the
// directory is read again for a change elsewhere, again when the object
// changes and still has it.
func TestProblemsLoggedOncePerObjectVersion(t *testing.T) {
	logs := &logLines{}
	// A Gateway that is not there: its warning is the problem followed.
	router := metaRouter + "  gateways: [istio-system/ingress]\n"
	d := dir(t, map[string]string{"greeter.yaml": serviceEntry + "---\n" + destinationRule, "router.yaml": router})
	next := runStepsLogging(t, d, slog.New(slog.NewTextHandler(logs, nil)))
	const gateways = "no such Gateway: these routes apply at no gateway"
	next()
	if got := logs.take(gateways); len(got) != 1 {
		t.Fatalf("first read: logged %q, want it once", got)
	}
	write(t, d, "other.yml", otherService)
	if s := next(); !hasProblem(s, gateways) {
		t.Fatalf("the problem is gone: %q", s.problems)
	}
	if got := logs.take(gateways); len(got) != 0 {
		t.Fatalf("unchanged MetaRouter, another file changed: logged again %q", got)
	}
	next()
	if got := logs.take(gateways); len(got) != 0 {
		t.Fatalf("nothing changed: logged again %q", got)
	}
	write(t, d, "router.yaml", strings.Replace(router, "value: prod", "value: staging", 1))
	next()
	if got := logs.take(gateways); len(got) != 1 {
		t.Fatalf("new version of the MetaRouter: logged %q, want it once", got)
	}
	// Errors too.
	write(t, d, "router.yaml", strings.Replace(metaRouter, "subset: v2}}]", "subset: v9}}]", 1))
	next()
	const v9 = `spec.routes[0].route[0].destination.subset: \"v9\"`
	if got := logs.take(v9); len(got) != 1 {
		t.Fatalf("broken MetaRouter: logged %q, want it once", got)
	}
	write(t, d, "other.yml", "# nothing\n")
	next()
	if got := logs.take(v9); len(got) != 0 {
		t.Fatalf("unchanged broken MetaRouter: logged again %q", got)
	}
}
