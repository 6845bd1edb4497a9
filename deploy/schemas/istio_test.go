package schemas

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	clientnetworking "istio.io/client-go/pkg/apis/networking/v1alpha3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	// breeze.so links this codec; so must the checks of its configs.
	_ "github.com/breeze-mesh/breeze/codecs/dubbo"
	"github.com/breeze-mesh/breeze/deploy"
)

var istioDir = filepath.Join(configDir, "istio")

// decoder decodes Kubernetes manifests strictly (unknown and duplicate
// fields are errors) into the API types of Kubernetes 1.34 (what Istio 1.28
// builds against) and of Istio's client-go 1.28.
func decoder(t *testing.T) runtime.Decoder {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, clientnetworking.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}

// splitDocs splits a YAML stream at its "---" lines.
func splitDocs(data []byte) []string {
	var docs []string
	for _, d := range strings.Split("\n"+string(data), "\n---\n") {
		for _, l := range strings.Split(d, "\n") {
			if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
				docs = append(docs, d)
				break
			}
		}
	}
	return docs
}

func decodeAll(t *testing.T, file string) []runtime.Object {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dec := decoder(t)
	var out []runtime.Object
	for i, doc := range splitDocs(data) {
		obj, _, err := dec.Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("%s: document %d: %v", file, i+1, err)
		}
		out = append(out, obj)
	}
	return out
}

func description(t *testing.T) (*deploy.Service, []*deploy.EnvoyFilter) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(istioDir, "greeter.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := deploy.ParseService(data)
	if err != nil {
		t.Fatal(err)
	}
	if s, err = deploy.Resolve(s); err != nil {
		t.Fatal(err)
	}
	efs, err := deploy.Render(s)
	if err != nil {
		t.Fatal(err)
	}
	return s, efs
}

// The shipped EnvoyFilters decode into Istio client-go's EnvoyFilter type
// (Kubernetes ObjectMeta, strictly), and client-go reads the same spec as
// Breeze's strict check does.
func TestEnvoyFiltersWithClientGo(t *testing.T) {
	file := filepath.Join(istioDir, "greeter-envoyfilters.yaml")
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	ours, f := deploy.CheckEnvoyFilters(data)
	if err := f.Err(); err != nil {
		t.Fatal(err)
	}
	objs := decodeAll(t, file)
	if len(objs) != len(ours) || len(objs) == 0 {
		t.Fatalf("%d objects, %d EnvoyFilters", len(objs), len(ours))
	}
	for i, obj := range objs {
		ef, ok := obj.(*clientnetworking.EnvoyFilter)
		if !ok {
			t.Fatalf("document %d: %T, want an EnvoyFilter", i+1, obj)
		}
		if errs := validation.IsDNS1123Subdomain(ef.Name); len(errs) > 0 {
			t.Errorf("%s: %v", ef.Name, errs)
		}
		if errs := validation.IsDNS1123Label(ef.Namespace); len(errs) > 0 {
			t.Errorf("%s: namespace %q: %v", ef.Name, ef.Namespace, errs)
		}
		for k, v := range ef.Labels {
			if errs := append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...); len(errs) > 0 {
				t.Errorf("%s: label %s=%s: %v", ef.Name, k, v, errs)
			}
		}
		if ef.Name != ours[i].Name || ef.Namespace != ours[i].Namespace {
			t.Errorf("document %d: client-go reads %s/%s, Breeze %s/%s", i+1, ef.Namespace, ef.Name, ours[i].Namespace, ours[i].Name)
		}
		if !proto.Equal(&ef.Spec, ours[i].Spec) {
			t.Errorf("%s: client-go and Breeze read different specs:\n%v\n%v", ef.Name, &ef.Spec, ours[i].Spec)
		}
	}
}

// demo.yaml is consistent with the description the EnvoyFilters come from:
// the Service's ClusterIP and port, the headless Services behind the
// STRICT_DNS endpoints, the pods the selectors pick, the sidecar
// annotations, and the demo peers' commands.
func TestDemoManifests(t *testing.T) {
	s, efs := description(t)
	objs := decodeAll(t, filepath.Join(istioDir, "demo.yaml"))
	services := map[string]*corev1.Service{}
	var deployments []*appsv1.Deployment
	for _, o := range objs {
		switch x := o.(type) {
		case *corev1.Service:
			if x.Namespace != s.Namespace {
				t.Errorf("Service %s: namespace %q, want %q", x.Name, x.Namespace, s.Namespace)
			}
			services[x.Name] = x
		case *appsv1.Deployment:
			if x.Namespace != s.Namespace {
				t.Errorf("Deployment %s: namespace %q, want %q", x.Name, x.Namespace, s.Namespace)
			}
			deployments = append(deployments, x)
		case *corev1.Namespace:
			if x.Labels["istio-injection"] != "enabled" {
				t.Errorf("Namespace %s: want the label istio-injection: enabled", x.Name)
			}
		}
	}

	// The service clients call: its ClusterIP names the listener.
	svc := services[strings.Split(s.Host, ".")[0]]
	if svc == nil {
		t.Fatalf("no Service for host %s", s.Host)
	}
	if svc.Spec.ClusterIP != s.VIP {
		t.Errorf("Service %s: clusterIP %q, but greeter.yaml's vip is %q", svc.Name, svc.Spec.ClusterIP, s.VIP)
	}
	checkPort := func(svc *corev1.Service, port, target uint32) {
		for _, p := range svc.Spec.Ports {
			if uint32(p.Port) == port {
				if !strings.HasPrefix(p.Name, "tcp") && (p.AppProtocol == nil || *p.AppProtocol != "tcp") {
					t.Errorf("Service %s: port %d is named %q: want tcp-..., so that Istio builds a TCP listener with tcp_proxy", svc.Name, port, p.Name)
				}
				if uint32(p.TargetPort.IntValue()) != target {
					t.Errorf("Service %s: port %d targets %s, want %d", svc.Name, port, p.TargetPort.String(), target)
				}
				return
			}
		}
		t.Errorf("Service %s: no port %d", svc.Name, port)
	}
	checkPort(svc, s.Port, s.TargetPort)

	// Each STRICT_DNS endpoint is a headless Service picking that version.
	for _, c := range s.Outbound.GetClusters() {
		for _, e := range c.GetEndpoints() {
			name, ns, _ := strings.Cut(e.GetAddress(), ".")
			ns, _, _ = strings.Cut(ns, ".")
			hs := services[name]
			if hs == nil || ns != s.Namespace {
				t.Errorf("endpoint %s: no Service %s in namespace %s", e.GetAddress(), name, s.Namespace)
				continue
			}
			if hs.Spec.ClusterIP != corev1.ClusterIPNone {
				t.Errorf("Service %s: clusterIP %q: want None (headless), so that DNS answers with the pods", name, hs.Spec.ClusterIP)
			}
			for k, v := range e.GetLabels() {
				if hs.Spec.Selector[k] != v {
					t.Errorf("Service %s: selector %v does not pick the endpoint's %s=%s", name, hs.Spec.Selector, k, v)
				}
			}
			checkPort(hs, e.GetPort(), s.TargetPort)
		}
	}

	libraryPath := libraryPathOf(t, efs)
	pickedBy := func(selector map[string]string) []*appsv1.Deployment {
		var out []*appsv1.Deployment
		for _, d := range deployments {
			if subset(selector, d.Spec.Template.Labels) {
				out = append(out, d)
			}
		}
		return out
	}
	clients, servers := pickedBy(s.Clients), pickedBy(s.Selector)
	if len(clients) == 0 || len(servers) == 0 {
		t.Fatalf("clients %v pick %d Deployments, selector %v picks %d", s.Clients, len(clients), s.Selector, len(servers))
	}
	for _, d := range append(slices.Clone(clients), servers...) {
		checkSidecar(t, d, libraryPath)
	}
	for _, d := range servers {
		c := d.Spec.Template.Spec.Containers[0]
		cmd := strings.Join(append(c.Command, c.Args...), " ")
		if !strings.Contains(cmd, "provider -port "+strconv.Itoa(int(s.TargetPort))) {
			t.Errorf("Deployment %s: command %q: want provider -port %d (the inbound Breeze dials 127.0.0.1:%d)", d.Name, cmd, s.TargetPort, s.TargetPort)
		}
		if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return uint32(p.ContainerPort) == s.TargetPort }) {
			t.Errorf("Deployment %s: no containerPort %d", d.Name, s.TargetPort)
		}
	}
	for _, d := range clients {
		c := d.Spec.Template.Spec.Containers[0]
		cmd := strings.Join(append(c.Command, c.Args...), " ")
		if want := fmt.Sprintf("-addr %s:%d", s.Host, s.Port); !strings.Contains(cmd, want) {
			t.Errorf("Deployment %s: command %q: want %s", d.Name, cmd, want)
		}
	}
}

// checkSidecar wants a pod template that brings breeze.so to libraryPath:
// either a proxy image the injector takes, or a volume mounted there, in
// the JSON form Istio's injection template expands into the pod (decoded
// strictly into Kubernetes' own types); and GODEBUG for Envoy.
func checkSidecar(t *testing.T, d *appsv1.Deployment, libraryPath string) {
	t.Helper()
	a := d.Spec.Template.Annotations
	image, hasImage := a["sidecar.istio.io/proxyImage"]
	volumes, hasVolume := a["sidecar.istio.io/userVolume"]
	switch {
	case hasImage && hasVolume:
		t.Errorf("Deployment %s: both a proxy image and a plugin volume", d.Name)
	case hasImage:
		if !strings.Contains(image, "/") || !strings.Contains(image, ":1.28.") {
			t.Errorf("Deployment %s: proxyImage %q: want registry/repository:1.28.x-...", d.Name, image)
		}
	case hasVolume:
		var vols map[string]corev1.VolumeSource
		if err := strictJSON(volumes, &vols); err != nil {
			t.Errorf("Deployment %s: userVolume: %v", d.Name, err)
		}
		var mounts map[string]corev1.VolumeMount
		if err := strictJSON(a["sidecar.istio.io/userVolumeMount"], &mounts); err != nil {
			t.Errorf("Deployment %s: userVolumeMount: %v", d.Name, err)
		}
		found := false
		for name, m := range mounts {
			v, ok := vols[name]
			if !ok {
				t.Errorf("Deployment %s: mount %q has no volume", d.Name, name)
				continue
			}
			if v.Image != nil && filepath.Join(m.MountPath, filepath.Base(libraryPath)) == libraryPath {
				found = true
			}
		}
		if !found {
			t.Errorf("Deployment %s: no image volume mounted so that %s is the plugin image's /%s", d.Name, libraryPath, filepath.Base(libraryPath))
		}
	default:
		t.Errorf("Deployment %s: runs Breeze, but has neither sidecar.istio.io/proxyImage nor sidecar.istio.io/userVolume", d.Name)
	}
	var pc struct {
		ProxyMetadata map[string]string `json:"proxyMetadata"`
	}
	if err := yaml.Unmarshal([]byte(a["proxy.istio.io/config"]), &pc); err != nil || pc.ProxyMetadata["GODEBUG"] != "cgocheck=0" {
		t.Errorf("Deployment %s: proxy.istio.io/config: want proxyMetadata GODEBUG: cgocheck=0 (%v)", d.Name, err)
	}
}

func strictJSON(s string, v any) error {
	d := json.NewDecoder(strings.NewReader(s))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

func libraryPathOf(t *testing.T, efs []*deploy.EnvoyFilter) string {
	t.Helper()
	paths := map[string]bool{}
	for _, ef := range efs {
		for _, cp := range ef.Spec.GetConfigPatches() {
			if cp.GetApplyTo() != networkingv1alpha3.EnvoyFilter_NETWORK_FILTER {
				continue
			}
			js, err := protojson.Marshal(cp.GetPatch().GetValue())
			if err != nil {
				t.Fatal(err)
			}
			var v struct {
				TypedConfig struct {
					LibraryPath string `json:"library_path"`
				} `json:"typed_config"`
			}
			if err := json.Unmarshal(js, &v); err != nil {
				t.Fatal(err)
			}
			paths[v.TypedConfig.LibraryPath] = true
		}
	}
	if len(paths) != 1 {
		t.Fatalf("want one library_path, got %v", paths)
	}
	for p := range paths {
		return p
	}
	return ""
}

func subset(a, b map[string]string) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
