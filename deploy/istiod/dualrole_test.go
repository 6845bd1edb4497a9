package istiod

import (
	"slices"
	"testing"

	"github.com/breeze-mesh/breeze/deploy"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// Two more services and their pods: mixed (20880 → 20881), whose pod
// also calls greeter, and self (7070 → 7071), whose pod calls itself.
const dualRoleMesh = `
apiVersion: v1
kind: Service
metadata: {name: mixed, namespace: demo}
spec:
  clusterIP: 10.96.60.10
  selector: {app: mixed}
  ports:
  - {name: tcp-dubbo, port: 20880, targetPort: 20881}
---
apiVersion: v1
kind: Service
metadata: {name: self, namespace: demo}
spec:
  clusterIP: 10.96.70.10
  selector: {app: self}
  ports:
  - {name: tcp-dubbo, port: 7070, targetPort: 7071}
---
apiVersion: v1
kind: Pod
metadata: {name: mixed-0, namespace: demo, labels: {app: mixed}}
spec: {containers: [{name: app, image: mixed, ports: [{containerPort: 20881}]}]}
status: {phase: Running, podIP: 10.0.0.9, podIPs: [{ip: 10.0.0.9}], conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: self-0, namespace: demo, labels: {app: self}}
spec: {containers: [{name: app, image: self, ports: [{containerPort: 7071}]}]}
status: {phase: Running, podIP: 10.0.0.10, podIPs: [{ip: 10.0.0.10}], conditions: [{type: Ready, status: "True"}]}
`

var (
	mixedPod = Workload{Name: "mixed-0", Namespace: "demo", IP: "10.0.0.9", Labels: map[string]string{"app": "mixed"}}
	selfPod  = Workload{Name: "self-0", Namespace: "demo", IP: "10.0.0.10", Labels: map[string]string{"app": "self"}}
)

// Pods that are clients and providers under Istio mTLS (issue 22): mixed-0
// calls greeter (service X) and serves mixed (service Y); self-0 calls and
// serves self. Rendered by deploy.Render and fed to istiod 1.28.3: each
// pod's outbound listener carries Breeze dialing through the plainText
// cluster with Istio's TLS, its inbound chains carry Breeze with
// upstream_connect GO_LOOPBACK to the app at 127.0.0.1, and nothing else
// differs from what istiod generates without the EnvoyFilters (push and
// ADS).
func TestPodsThatCallAndServeUnderMTLS(t *testing.T) {
	svc := func(host, vip string, port, target uint32, clients, selector string) *deploy.Service {
		return &deploy.Service{
			Host: host + ".demo.svc.cluster.local", Name: host, Namespace: "demo", VIP: vip, Port: port, TargetPort: target,
			Protocol: "dubbo", Istio: "1.28", Direction: deploy.Both,
			Clients: map[string]string{"app": clients}, Selector: map[string]string{"app": selector},
			Outbound: &breezev1.ProxyConfig{Clusters: []*breezev1.Cluster{{
				Name: host, Type: breezev1.Cluster_STRICT_DNS,
				Endpoints: []*breezev1.Endpoint{{Address: host + ".demo.svc.cluster.local", Port: port}},
			}}},
		}
	}
	ss := []*deploy.Service{
		svc("greeter", "10.96.20.80", 20880, 20880, "mixed", "greeter"),
		svc("mixed", "10.96.60.10", 20880, 20881, "consumer", "mixed"),
		svc("self", "10.96.70.10", 7070, 7071, "self", "self"),
	}
	in := Inputs{Kubernetes: readFile(t, "testdata/mesh.yaml") + "\n---\n" + dualRoleMesh}
	workloads := []Workload{consumer, greeterPod, mixedPod, selfPod, webPod, otherClient}
	efs := render(t, ss...)

	changes := CheckPlacement(t, in, efs, workloads, ss)
	logChanges(t, changes)
	got := changedPlacements(changes)
	want := map[string][]string{
		consumer.Name:   {"mixed outbound"},
		greeterPod.Name: {"greeter inbound"},
		mixedPod.Name:   {"greeter outbound", "mixed inbound"},
		selfPod.Name:    {"self inbound", "self outbound"},
	}
	for _, w := range workloads {
		if !slices.Equal(got[w.Name], want[w.Name]) {
			t.Errorf("%s: Breeze placed for %v, want %v", w, got[w.Name], want[w.Name])
		}
	}

	// Read on istiod's own terms.
	m := NewMesh(t, Inputs{Kubernetes: in.Kubernetes, Istio: efs})
	for _, tc := range []struct {
		w        Workload
		outbound string // the listener of the service it calls
		target   uint32 // the target port of the service it serves
	}{{mixedPod, "10.96.20.80_20880", 20881}, {selfPod, "10.96.70.10_7070", 7071}} {
		s := m.Sidecar(tc.w)
		out, err := BreezeFilterOn(s.Listener(tc.outbound), ChainMatch{})
		if err != nil {
			t.Fatalf("%s %s: %v", tc.w, tc.outbound, err)
		}
		if len(out) != 1 || out[0].Proxy.GetUpstreamConnect() != breezev1.UpstreamConnect_ENVOY {
			t.Errorf("%s %s: outbound Breeze %v, want one dialing through Envoy (plainText)", tc.w, tc.outbound, out)
		}
		pt := s.Cluster(deploy.PlainTextCluster)
		if pt.GetTransportSocket().GetName() != "envoy.transport_sockets.tls" {
			t.Errorf("%s: plainText cluster %v, want Istio's mTLS transport socket", tc.w, pt)
		}
		vi := s.Listener(virtualInbound)
		ins, err := BreezeFilterOn(vi, ChainMatch{DestinationPort: tc.target})
		if err != nil {
			t.Fatalf("%s: %v", tc.w, err)
		}
		if len(ins) == 0 {
			t.Fatalf("%s: no Breeze on the virtualInbound chains of port %d: %s", tc.w, tc.target, chainsSummary(vi))
		}
		for _, b := range ins {
			eps := b.Proxy.GetClusters()
			if b.Proxy.GetUpstreamConnect() != breezev1.UpstreamConnect_GO_LOOPBACK || len(eps) != 1 || len(eps[0].GetEndpoints()) != 1 ||
				eps[0].GetEndpoints()[0].GetAddress() != "127.0.0.1" || eps[0].GetEndpoints()[0].GetPort() != tc.target {
				t.Errorf("%s %s: inbound Breeze upstream_connect %s clusters %v, want GO_LOOPBACK to the app at 127.0.0.1:%d", tc.w, b.ChainName, b.Proxy.GetUpstreamConnect(), eps, tc.target)
			}
		}
		t.Logf("%s: outbound %s through plainText (%s); inbound port %d on %d chains, GO_LOOPBACK to 127.0.0.1:%d",
			tc.w, tc.outbound, pt.GetTransportSocket().GetName(), tc.target, len(ins), tc.target)
	}
	// A pod that only serves gets no plainText at all: its inbound side
	// needs none.
	if pt := m.Sidecar(greeterPod).Cluster(deploy.PlainTextCluster); pt != nil {
		t.Errorf("%s: plainText cluster %v, want none (its inbound Breeze dials with the Go socket)", greeterPod, pt)
	}
}
