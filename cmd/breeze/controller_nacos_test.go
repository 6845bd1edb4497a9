package main

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/nacos-group/nacos-sdk-go/v2/clients"
	"github.com/nacos-group/nacos-sdk-go/v2/common/constant"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/breeze-mesh/breeze/registry/nacos/nacostest"
)

// dubboGoInstance is the metadata dubbo-go 3.3's Nacos registry writes for
// an interface-level provider instance (registry/nacos's tests, from
// registry/testdata/dubbo-go-3.3.0-nacos).
func dubboGoInstance(iface string) map[string]string {
	return map[string]string{
		"anyhost": "true", "application": "greeter", "category": "providers", "dubbo": "2.0.2",
		"interface": iface, "methods": "Greet,Whoami", "path": iface, "protocol": "dubbo",
		"release": "dubbo-golang-3.2.0", "side": "provider", "version": "1.0.0",
	}
}

// metricLine is the first series of exposition whose name and labels start
// with prefix, and its value ("" when none).
func metricLine(exposition, prefix string) (series, value string) {
	m := regexp.MustCompile(`(?m)^(` + regexp.QuoteMeta(prefix) + `\S*) (\S+)$`).FindStringSubmatch(exposition)
	if m == nil {
		return "", ""
	}
	return m[1], m[2]
}

// `breeze controller -nacos` against a real rnacos and API server: a
// provider registered as dubbo-go registers it becomes a ServiceEntry with
// its endpoint and labels; deregistered, its ServiceEntry is deleted;
// rnacos stopped, the registry is stale and the ServiceEntry of the
// provider still registered stays as it was.
func TestControllerNacosRegistry(t *testing.T) {
	c, kubeconfig := kubeAPIServer(t)
	srv := nacostest.Start(t)
	const ns = "dubbo-nacos"
	if err := c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}

	// The providers' Nacos client: their instances are ephemeral, alive as
	// long as its connection (as a dubbo-go provider's).
	host, portText, _ := net.SplitHostPort(srv.Addr)
	port, _ := strconv.ParseUint(portText, 10, 16)
	dir := t.TempDir()
	naming, err := clients.NewNamingClient(vo.NacosClientParam{
		ClientConfig: constant.NewClientConfig(constant.WithTimeoutMs(5000), constant.WithLogDir(dir), constant.WithCacheDir(dir),
			constant.WithNotLoadCacheAtStart(true), constant.WithLogLevel("error")),
		ServerConfigs: []constant.ServerConfig{*constant.NewServerConfig(host, port)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(naming.CloseClient)
	// The SDK's bool is false with rnacos though it did it (no "success"
	// field in its replies: registry/README.md); what counts is what the
	// controller then reads.
	register := func(iface, ip string) {
		t.Helper()
		if _, err := naming.RegisterInstance(vo.RegisterInstanceParam{Ip: ip, Port: 20880, ServiceName: "providers:" + iface + ":1.0.0:",
			Weight: 1, Enable: true, Healthy: true, Ephemeral: true, Metadata: dubboGoInstance(iface)}); err != nil {
			t.Fatalf("register %s at %s: %v", iface, ip, err)
		}
	}
	register("org.breeze.Greeter", "10.0.0.2")
	register("org.breeze.Other", "10.0.0.3")

	p := startController(t, "controller", kubeconfig, "-nacos", srv.Addr, "-registry-namespace", ns)
	const greeter, other = "dubbo-org.breeze.greeter", "dubbo-org.breeze.other"
	get := func(name string) (*unstructured.Unstructured, error) {
		se := &unstructured.Unstructured{}
		se.SetAPIVersion("networking.istio.io/v1")
		se.SetKind("ServiceEntry")
		return se, c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, se)
	}
	waitEntry := func(name string) *unstructured.Unstructured {
		t.Helper()
		var se *unstructured.Unstructured
		waitFor(t, "ServiceEntry "+name, func() (bool, string) {
			var err error
			if se, err = get(name); err != nil {
				return false, err.Error()
			}
			return true, ""
		})
		return se
	}
	se := waitEntry(greeter)
	eps, _, _ := unstructured.NestedSlice(se.Object, "spec", "endpoints")
	if len(eps) != 1 {
		t.Fatalf("ServiceEntry %s endpoints %v, want the one provider", greeter, eps)
	}
	ep := eps[0].(map[string]any)
	epLabels, _, _ := unstructured.NestedStringMap(ep, "labels")
	epPorts, _, _ := unstructured.NestedMap(ep, "ports")
	if ep["address"] != "10.0.0.2" || fmt.Sprint(epPorts) != "map[tcp-dubbo:20880]" || epLabels["version"] != "1.0.0" || epLabels["application"] != "greeter" {
		t.Errorf("ServiceEntry %s endpoint %v: want 10.0.0.2, port tcp-dubbo 20880, labels version 1.0.0 and application greeter", greeter, ep)
	}
	hosts, _, _ := unstructured.NestedStringSlice(se.Object, "spec", "hosts")
	if l := se.GetLabels(); l["breeze.io/registry"] != "nacos" || l["breeze.io/source-kind"] != "registry" || fmt.Sprint(hosts) != "[org.breeze.Greeter]" {
		t.Errorf("ServiceEntry %s: labels %v hosts %v, want breeze.io/registry nacos, breeze.io/source-kind registry, host org.breeze.Greeter", greeter, l, hosts)
	}
	t.Logf("ServiceEntry %s: hosts %v, labels %v, endpoint %v", greeter, hosts, se.GetLabels(), ep)
	otherSE := waitEntry(other)

	if _, err := naming.DeregisterInstance(vo.DeregisterInstanceParam{Ip: "10.0.0.2", Port: 20880, ServiceName: "providers:org.breeze.Greeter:1.0.0:", Ephemeral: true}); err != nil {
		t.Fatalf("deregister: %v", err)
	}
	waitFor(t, "ServiceEntry "+greeter+" deleted once its provider deregistered", func() (bool, string) {
		_, err := get(greeter)
		return err != nil && strings.Contains(err.Error(), "not found"), fmt.Sprintf("get: %v", err)
	})
	waitFor(t, "the delete counted", func() (bool, string) {
		w := registryWrites(p)
		return w["delete"] == 1, fmt.Sprintf("breeze_registry_serviceentry_writes_total %v", w)
	})

	srv.Stop()
	var stale string
	waitFor(t, "the registry stale on /metrics and in the log", func() (bool, string) {
		_, body := status("http://" + p.metrics + "/metrics")
		series, v := metricLine(body, `breeze_registry_stale{registry="nacos `)
		stale = series + " " + v
		return v == "1" && strings.Contains(p.stderr.String(), "registry stale"), fmt.Sprintf("%q; log:\n%s", stale, p.stderr)
	})
	after, err := get(other)
	if err != nil {
		t.Fatalf("ServiceEntry %s while rnacos is down: %v", other, err)
	}
	if after.GetResourceVersion() != otherSE.GetResourceVersion() || after.GetUID() != otherSE.GetUID() {
		t.Errorf("ServiceEntry %s rewritten while stale: uid %s resourceVersion %s, was %s %s", other, after.GetUID(), after.GetResourceVersion(), otherSE.GetUID(), otherSE.GetResourceVersion())
	}
	if w := registryWrites(p); w["delete"] != 1 || w["update"] != 0 || w["create"] != 2 {
		t.Errorf("breeze_registry_serviceentry_writes_total %v, want create 2, delete 1 (the deregistered one), no update", w)
	}
	t.Logf("rnacos stopped: %s; %s kept (resourceVersion %s); writes %v", stale, other, after.GetResourceVersion(), registryWrites(p))
}
