package kubesync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protojson"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/breeze-mesh/breeze/internal/kubetest"
	"github.com/breeze-mesh/breeze/internal/testwait"
	"github.com/breeze-mesh/breeze/registry"
)

// One real kube-apiserver and etcd (envtest) with Istio's and Aeraki's
// CRDs, as the controller's own tests run; each test works in a namespace
// of its own, against a real ZooKeeper of its own (zktest).
var env struct {
	rest   *rest.Config
	client client.Client
}

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	assets, err := kubetest.Assets()
	if err != nil {
		// No skip: `make test` builds it (scripts/kube-peer.sh install).
		fmt.Fprintln(os.Stderr, "FAIL: no Kubernetes API server for envtest (bash scripts/kube-peer.sh install):", err)
		return 1
	}
	crds, err := kubetest.MeshCRDFiles()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	te := &envtest.Environment{BinaryAssetsDirectory: assets, CRDDirectoryPaths: crds, ErrorIfCRDPathMissing: true}
	cfg, err := te.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting envtest:", err)
		return 1
	}
	defer te.Stop()
	env.rest = cfg
	if env.client, err = client.New(cfg, client.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	testwait.For(t, what, 60*time.Second, cond)
}

func testLog() *slog.Logger {
	if os.Getenv("CONTROLLER_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func namespace(t *testing.T) string {
	t.Helper()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 50 {
		name = name[:50]
	}
	ns := &unstructured.Unstructured{}
	ns.SetAPIVersion("v1")
	ns.SetKind("Namespace")
	ns.SetName(name)
	if err := env.client.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	return name
}

// The providers are the provider node a real Dubbo Java 3.3.6 provider
// wrote (registry/testdata), moved to other addresses and interfaces.
func capturedURL(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("../testdata/dubbo-java-3.3.6/interface-provider.txt")
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.QueryUnescape(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// providerURL is the captured URL for iface at addr (ip:port).
func providerURL(t *testing.T, iface, addr string) string {
	t.Helper()
	return strings.NewReplacer("127.0.0.1:38367", addr, "org.breeze.Greeter", iface).Replace(capturedURL(t))
}

type quietZK struct{}

func (quietZK) Printf(string, ...any) {}

// provider registers as a Dubbo provider does: an ephemeral node under a
// session of its own; close removes it (as a provider stopping does).
type provider struct{ conn *zk.Conn }

func register(t *testing.T, zkAddr, rawURL string) *provider {
	t.Helper()
	conn, _, err := zk.Connect([]string{zkAddr}, 10*time.Second, zk.WithLogger(quietZK{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	in, err := registry.ParseURL(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	dir := "/dubbo/" + in.Interface + "/providers"
	for _, p := range []string{"/dubbo", "/dubbo/" + in.Interface, dir} {
		if _, err := conn.Create(p, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && err != zk.ErrNodeExists {
			t.Fatalf("create %s: %v", p, err)
		}
	}
	if _, err := conn.Create(dir+"/"+url.QueryEscape(rawURL), nil, zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatalf("registering %s: %v", rawURL, err)
	}
	return &provider{conn: conn}
}

func (p *provider) stop() { p.conn.Close() }

// serviceEntries lists the ServiceEntries of ns by name.
func serviceEntries(t *testing.T, ns string) map[string]*unstructured.Unstructured {
	t.Helper()
	l := &unstructured.UnstructuredList{}
	l.SetAPIVersion("networking.istio.io/v1")
	l.SetKind("ServiceEntryList")
	if err := env.client.List(context.Background(), l, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	out := map[string]*unstructured.Unstructured{}
	for i := range l.Items {
		out[l.Items[i].GetName()] = &l.Items[i]
	}
	return out
}

// strictSpec decodes a stored ServiceEntry as Istio's API reads it:
// metadata into ObjectMeta and spec into istio.io/api's ServiceEntry,
// unknown fields being errors.
func strictSpec(t *testing.T, u *unstructured.Unstructured) *networkingv1alpha3.ServiceEntry {
	t.Helper()
	md, _ := json.Marshal(u.Object["metadata"])
	dec := json.NewDecoder(strings.NewReader(string(md)))
	dec.DisallowUnknownFields()
	var om metav1.ObjectMeta
	if err := dec.Decode(&om); err != nil {
		t.Fatalf("ServiceEntry %s: metadata does not decode strictly: %v", u.GetName(), err)
	}
	spec, _ := json.Marshal(u.Object["spec"])
	se := &networkingv1alpha3.ServiceEntry{}
	if err := protojson.Unmarshal(spec, se); err != nil {
		t.Fatalf("ServiceEntry %s: spec does not decode strictly as Istio's ServiceEntry: %v\n%s", u.GetName(), err, spec)
	}
	return se
}

// summary says what a ServiceEntry holds: hosts, addresses, and each
// endpoint with its port and a few labels.
func summary(se *networkingv1alpha3.ServiceEntry) string {
	var eps []string
	for _, e := range se.GetEndpoints() {
		eps = append(eps, fmt.Sprintf("%s:%d(version=%s,application=%s,w%d)", e.GetAddress(), e.GetPorts()[registry.PortName], e.GetLabels()["version"], e.GetLabels()["application"], e.GetWeight()))
	}
	return fmt.Sprintf("hosts=%v addresses=%v endpoints=[%s]", se.GetHosts(), se.GetAddresses(), strings.Join(eps, " "))
}

// crmetricsGatherer is controller-runtime's registry: what the
// controller's /metrics serves.
var crmetricsGatherer prometheus.Gatherer = crmetrics.Registry

// metric is the value of a series g holds, 0 when absent.
func metric(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m, labels) {
				if c := m.GetCounter(); c != nil {
					return c.GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
			n++
		}
	}
	return n == len(want)
}

// passes records the Sync's passes (its OnSync).
type passes struct {
	mu   sync.Mutex
	all  []registry.Update
	errs []error
}

func (p *passes) record(u registry.Update, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.all = append(p.all, u)
	p.errs = append(p.errs, err)
}

func (p *passes) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.all)
}

// waitPass waits for a pass after the first `after` that satisfies ok and
// succeeded.
func (p *passes) waitPass(t *testing.T, what string, after int, ok func(registry.Update) bool) {
	t.Helper()
	eventually(t, what, func() (bool, string) {
		p.mu.Lock()
		defer p.mu.Unlock()
		for i := after; i < len(p.all); i++ {
			if p.errs[i] == nil && ok(p.all[i]) {
				return true, ""
			}
		}
		if n := len(p.all); n > 0 {
			return false, fmt.Sprintf("%d passes, the last stale=%v with %d instances, error %v", n, p.all[n-1].Stale, len(p.all[n-1].Instances), p.errs[n-1])
		}
		return false, "no pass yet"
	})
}

func anyPass(registry.Update) bool { return true }
