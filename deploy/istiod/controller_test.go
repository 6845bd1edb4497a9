package istiod

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/breeze-mesh/breeze/controller"
	"github.com/breeze-mesh/breeze/deploy"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// The EnvoyFilters `breeze controller` writes, made by its own code
// (controller.ServiceEnvoyFilters, the reconciler's computation) for
// Service greeter with a tcp-metaprotocol-dubbo port and the
// breeze.io/clients annotation, fed to istiod 1.28.3 with the Services and
// Pods: Breeze on the consumer's outbound listener and greeter's inbound
// chain, nothing on the other pods.
func TestControllerEnvoyFiltersPlaceBreeze(t *testing.T) {
	const xds = "breeze-controller.breeze-system.svc.cluster.local:15010"
	mesh := readFile(t, "testdata/mesh.yaml")
	const oldPort = "metadata: {name: greeter, namespace: demo}\nspec:\n  clusterIP: 10.96.20.80\n  selector: {app: greeter}\n  ports:\n  - {name: tcp-dubbo, port: 20880, targetPort: 20880}\n"
	const newPort = "metadata: {name: greeter, namespace: demo, annotations: {breeze.io/clients: app=consumer}}\nspec:\n  clusterIP: 10.96.20.80\n  selector: {app: greeter}\n  ports:\n  - {name: tcp-metaprotocol-dubbo-greeter, port: 20880, targetPort: 20880}\n"
	if !strings.Contains(mesh, oldPort) {
		t.Fatalf("testdata/mesh.yaml has no Service greeter as this test expects:\n%s", oldPort)
	}
	mesh = strings.Replace(mesh, oldPort, newPort, 1)
	var svc corev1.Service
	if err := yaml.Unmarshal([]byte(newPort), &svc); err != nil {
		t.Fatal(err)
	}
	efs, issues, err := controller.ServiceEnvoyFilters(&svc, nil, controller.Options{XDSAddress: xds, Istio: "1.28"})
	if err != nil || len(issues) > 0 {
		t.Fatalf("the controller's EnvoyFilters for Service greeter: %v; issues %q", err, issues)
	}
	var docs []string
	for _, ef := range efs {
		y, err := yaml.Marshal(ef.Object)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(y))
	}
	// Where Breeze belongs, described independently of the controller:
	// both directions, clients app=consumer, routes from its xDS server.
	want := &deploy.Service{
		Host: "greeter.demo.svc.cluster.local", Name: "greeter-20880", Namespace: "demo", Istio: "1.28",
		VIP: "10.96.20.80", Port: 20880, TargetPort: 20880, Protocol: "dubbo", Direction: deploy.Both,
		Clients: map[string]string{"app": "consumer"}, Selector: map[string]string{"app": "greeter"},
		Outbound: &breezev1.ProxyConfig{Xds: &breezev1.XdsSource{Address: xds, RouteConfigName: deploy.RouteConfigName("greeter.demo.svc.cluster.local", 20880)}},
	}
	workloads := []Workload{consumer, greeterPod, calcPod, webPod, otherClient}
	changes := CheckPlacement(t, Inputs{Kubernetes: mesh}, strings.Join(docs, "---\n"), workloads, []*deploy.Service{want})
	logChanges(t, changes)
	got := changedPlacements(changes)
	wantPlaced := map[string][]string{consumer.Name: {"greeter-20880 outbound"}, greeterPod.Name: {"greeter-20880 inbound"}}
	for _, w := range workloads {
		if !slices.Equal(got[w.Name], wantPlaced[w.Name]) {
			t.Errorf("%s: Breeze placed for %v, want %v", w.Name, got[w.Name], wantPlaced[w.Name])
		}
	}
}
