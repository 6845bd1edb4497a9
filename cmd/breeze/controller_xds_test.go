package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/encoding/protojson"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/breeze-mesh/breeze/internal/testpki"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
	xdsclient "github.com/breeze-mesh/breeze/xds/client"
)

const greeterMetaRouter = `apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: greeter, namespace: demo}
spec:
  hosts: [greeter.demo.svc.cluster.local]
  routes:
  - name: say-hello
    match: {attributes: {method: {exact: sayHello}}}
    route: [{destination: {host: greeter.demo.svc.cluster.local}}]
`

// `breeze controller` with -xds-tls-cert/-xds-tls-key and -xds-auth token,
// as a process against a real API server: the plugin's xDS client, set up
// from the xds section of the EnvoyFilter the controller wrote (address,
// tls.ca_file, token_file, route_config_name), with a TokenRequest token
// of audience breeze gets the Service's route table (with the MetaRouter's
// route) and cluster; without a token, with a token of another audience,
// or not trusting the server's CA it gets nothing, and the controller's
// /metrics counts the refused streams by cause.
func TestControllerServesXDSOverTLSWithServiceAccountTokens(t *testing.T) {
	c, kubeconfig := kubeAPIServer(t)
	restCfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca := testpki.New(t, dir, "controller-xds")
	// The sidecar paths written into the EnvoyFilters are this machine's
	// files, so that the plugin config the controller writes is usable here
	// as it is.
	tokenFile := filepath.Join(dir, "token")
	writeToken(t, tokenFile, serviceAccountToken(t, cs, "default", "proxy", "breeze"))
	p := startController(t, "controller", kubeconfig,
		"-xds-tls-cert", ca.CertFile, "-xds-tls-key", ca.KeyFile, "-xds-sidecar-ca-file", ca.CAFile,
		"-xds-auth", "token", "-xds-sidecar-token-file", tokenFile,
		// The host the plugins check the certificate against.
		"-xds-address", testpki.ServerName+":15010")

	ctx := context.Background()
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "greeter", Namespace: "demo"}, Spec: corev1.ServiceSpec{
			ClusterIP: "10.0.0.10", Selector: map[string]string{"app": "greeter"},
			Ports: []corev1.ServicePort{{Name: "tcp-metaprotocol-dubbo-greeter", Port: 20880}},
		}},
		&discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: "greeter-1", Namespace: "demo", Labels: map[string]string{discoveryv1.LabelServiceName: "greeter"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.1"}}},
			Ports:       []discoveryv1.EndpointPort{{Name: ptr("tcp-metaprotocol-dubbo-greeter"), Port: ptr(int32(20880))}},
		},
		yamlObject(t, greeterMetaRouter),
	} {
		if err := c.Create(ctx, obj); err != nil {
			t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
		}
	}

	var src *breezev1.XdsSource
	waitFor(t, "the outbound EnvoyFilter with the plugin's xds section", func() (bool, string) {
		ef := &unstructured.Unstructured{}
		ef.SetAPIVersion("networking.istio.io/v1alpha3")
		ef.SetKind("EnvoyFilter")
		if err := c.Get(ctx, client.ObjectKey{Namespace: "demo", Name: "greeter-20880-breeze-outbound"}, ef); err != nil {
			return false, err.Error()
		}
		x, ok := findKey(ef.Object, "xds")
		if !ok {
			return false, fmt.Sprintf("no xds section in %v", ef.Object)
		}
		js, _ := json.Marshal(x)
		src = &breezev1.XdsSource{}
		if err := protojson.Unmarshal(js, src); err != nil {
			return false, fmt.Sprintf("xds section %s: %v", js, err)
		}
		return true, ""
	})
	if src.GetTls().GetCaFile() != ca.CAFile || src.GetTokenFile() != tokenFile {
		t.Fatalf("EnvoyFilter's xds section %v: want tls.ca_file %s and token_file %s", src, ca.CAFile, tokenFile)
	}
	host, _, err := net.SplitHostPort(src.GetAddress())
	if err != nil || host != testpki.ServerName {
		t.Fatalf("EnvoyFilter's xds.address %q: want host %s", src.GetAddress(), testpki.ServerName)
	}

	// connect builds the client as the plugin does from its config
	// (filters/proxy's acquireXDS), but dials the address the process
	// printed: testpki.ServerName resolves nowhere.
	type conn struct {
		routes   chan *breezev1.RouteConfiguration
		clusters chan *clusterv3.Cluster
		log      *lockedBuffer
	}
	connect := func(caFile, tokenFile string) conn {
		t.Helper()
		cn := conn{routes: make(chan *breezev1.RouteConfiguration, 10), clusters: make(chan *clusterv3.Cluster, 10), log: &lockedBuffer{}}
		opts := xdsclient.Options{Address: p.xds, NodeID: "proxy-1", TokenFile: tokenFile,
			TLS: &xdsclient.TLS{CAFile: caFile, ServerName: host},
			Log: slog.New(slog.NewTextHandler(cn.log, nil)), MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}
		xc, err := xdsclient.New(opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(xc.Close)
		xc.WatchRoutes(src.GetRouteConfigName(), func(r *breezev1.RouteConfiguration) error { cn.routes <- r; return nil })
		xc.WatchClusters("outbound|20880||greeter.demo.svc.cluster.local", func(cl *clusterv3.Cluster) error { cn.clusters <- cl; return nil })
		return cn
	}
	metrics := func() string { _, body := status("http://" + p.metrics + "/metrics"); return body }

	good := connect(src.GetTls().GetCaFile(), src.GetTokenFile())
	var names []string
	waitFor(t, "the route table "+src.GetRouteConfigName()+" with the MetaRouter's route", func() (bool, string) {
		select {
		case r := <-good.routes:
			names = names[:0]
			for _, rt := range r.GetRoutes() {
				names = append(names, rt.GetName())
			}
			return slices.Contains(names, "say-hello"), fmt.Sprintf("routes %v", names)
		default:
			return false, fmt.Sprintf("routes %v; client log:\n%s\ncontroller:\n%s", names, good.log, p.stderr)
		}
	})
	select {
	case cl := <-good.clusters:
		if cl == nil {
			t.Fatal("served, but the greeter's cluster is absent")
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the client with the service-account token got routes but no cluster; its log:\n%s", good.log)
	}
	t.Logf("served over TLS with a service-account token: route table %s routes %v, cluster outbound|20880||greeter.demo.svc.cluster.local", src.GetRouteConfigName(), names)

	refused := func(name string, cn conn, clientSays, metric string) {
		t.Helper()
		waitFor(t, name+" refused", func() (bool, string) {
			m := metrics()
			return strings.Contains(cn.log.String(), clientSays) && (metric == "" || counter(m, metric) > 0),
				fmt.Sprintf("client log:\n%s\n%s = %v", cn.log, metric, counter(m, metric))
		})
		select {
		case r := <-cn.routes:
			t.Errorf("%s was served %v", name, r)
		case cl := <-cn.clusters:
			t.Errorf("%s was served %v", name, cl)
		default:
		}
	}
	refused("a client without a token", connect(ca.CAFile, ""), "no_token", `breeze_xds_refused_streams_total{cause="no_token"}`)
	otherAudience := filepath.Join(dir, "istio-ca-token")
	writeToken(t, otherAudience, serviceAccountToken(t, cs, "default", "proxy", "istio-ca"))
	refused("a client with a token for audience istio-ca", connect(ca.CAFile, otherAudience), "invalid_token", `breeze_xds_refused_streams_total{cause="invalid_token"}`)
	// A client that does not trust the certificate ends the handshake
	// itself: the server sees no stream, so no cause counts it.
	other := testpki.New(t, t.TempDir(), "another-ca")
	refused("a client not trusting the controller's CA", connect(other.CAFile, tokenFile), "certificate signed by unknown authority", "")
	if !strings.Contains(p.stderr.String(), "cause=invalid_token") || !strings.Contains(p.stderr.String(), "cause=no_token") {
		t.Errorf("the controller did not log both refusals' causes:\n%s", p.stderr)
	}
	m := metrics()
	t.Logf("controller /metrics: no_token %v, invalid_token %v, review_failed %v",
		counter(m, `breeze_xds_refused_streams_total{cause="no_token"}`), counter(m, `breeze_xds_refused_streams_total{cause="invalid_token"}`), counter(m, `breeze_xds_refused_streams_total{cause="review_failed"}`))
	if n := counter(m, `breeze_xds_refused_streams_total{cause="review_failed"}`); n != 0 {
		t.Errorf("review_failed = %v: the API server's TokenReview should have answered every stream", n)
	}
}

// serviceAccountToken creates the service account if needed and requests
// a token of it for audience, as the kubelet does for a projected volume.
func serviceAccountToken(t *testing.T, cs kubernetes.Interface, ns, name, audience string) string {
	t.Helper()
	ctx := context.Background()
	sas := cs.CoreV1().ServiceAccounts(ns)
	if _, err := sas.Get(ctx, name, metav1.GetOptions{}); err != nil {
		if _, err := sas.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := sas.CreateToken(ctx, name, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s/%s: %v", ns, name, err)
	}
	return tr.Status.Token
}

func writeToken(t *testing.T, path, token string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
}

func yamlObject(t *testing.T, manifest string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	js, err := yaml.YAMLToJSON([]byte(manifest))
	if err == nil {
		err = u.UnmarshalJSON(js)
	}
	if err != nil {
		t.Fatalf("manifest: %v\n%s", err, manifest)
	}
	return u
}

// findKey finds the first value under key, depth first, in a decoded
// YAML or JSON tree.
func findKey(v any, key string) (any, bool) {
	switch x := v.(type) {
	case map[string]any:
		if val, ok := x[key]; ok {
			return val, true
		}
		for _, k := range slices.Sorted(maps.Keys(x)) {
			if val, ok := findKey(x[k], key); ok {
				return val, true
			}
		}
	case []any:
		for _, e := range x {
			if val, ok := findKey(e, key); ok {
				return val, true
			}
		}
	}
	return nil, false
}

// counter is the value of a series in a Prometheus text exposition, -1
// when absent.
func counter(exposition, series string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(exposition)
	if m == nil {
		return -1
	}
	var v float64
	fmt.Sscan(m[1], &v)
	return v
}

func ptr[T any](v T) *T { return &v }
