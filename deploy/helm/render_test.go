package helm

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/yaml"
)

// release is one rendering of the chart: what `helm install <name> -n
// <namespace> --set ...` would send to the API server.
type release struct {
	name, namespace string
	values          map[string]any
}

// render renders the chart with Helm's engine, as `helm template` does,
// into its objects: CRDs first, as Helm installs them.
func render(t *testing.T, r release) []*unstructured.Unstructured {
	t.Helper()
	objs, err := renderErr(r)
	if err != nil {
		t.Fatalf("rendering %s: %v", r.name, err)
	}
	return objs
}

func renderErr(r release) ([]*unstructured.Unstructured, error) {
	ch, err := loader.Load("breeze")
	if err != nil {
		return nil, err
	}
	vals, err := chartutil.ToRenderValues(ch, r.values, chartutil.ReleaseOptions{
		Name: r.name, Namespace: r.namespace, Revision: 1, IsInstall: true,
	}, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(ch, vals)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	var objs []*unstructured.Unstructured
	for _, n := range names {
		docs := releaseutil.SplitManifests(files[n])
		// SplitManifests names them manifest-0, manifest-1, ... in order.
		for i := range len(docs) {
			k := fmt.Sprintf("manifest-%d", i)
			u := &unstructured.Unstructured{}
			js, err := yaml.YAMLToJSON([]byte(docs[k]))
			if err != nil {
				return nil, fmt.Errorf("%s: %w\n%s", n, err, docs[k])
			}
			if string(js) == "null" {
				continue
			}
			if err := u.UnmarshalJSON(js); err != nil {
				return nil, fmt.Errorf("%s: %w\n%s", n, err, docs[k])
			}
			objs = append(objs, u)
		}
	}
	slices.SortStableFunc(objs, func(a, b *unstructured.Unstructured) int {
		return boolInt(b.GetKind() == "CustomResourceDefinition") - boolInt(a.GetKind() == "CustomResourceDefinition")
	})
	return objs, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// typed decodes every object strictly into client-go's and
// apiextensions' types: an unknown or misplaced field fails.
func typed(t *testing.T, objs []*unstructured.Unstructured) []runtime.Object {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, rbacv1.AddToScheme, policyv1.AddToScheme, apiextensionsv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	dec := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	var out []runtime.Object
	for _, u := range objs {
		js, err := u.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		o, _, err := dec.Decode(js, nil, nil)
		if err != nil {
			t.Errorf("%s %s: %v", u.GetKind(), u.GetName(), err)
			continue
		}
		out = append(out, o)
	}
	return out
}

func find[T runtime.Object](objs []runtime.Object, name string) (T, bool) {
	for _, o := range objs {
		if v, ok := o.(T); ok {
			if m, ok := o.(interface{ GetName() string }); ok && m.GetName() == name {
				return v, true
			}
		}
	}
	var zero T
	return zero, false
}

func kinds(objs []*unstructured.Unstructured) []string {
	var ks []string
	for _, o := range objs {
		id := o.GetKind() + "/" + o.GetName()
		if o.GetNamespace() != "" {
			id = o.GetKind() + "/" + o.GetNamespace() + "/" + o.GetName()
		}
		ks = append(ks, id)
	}
	return ks
}

var defaultRelease = release{name: "breeze", namespace: "breeze-system", values: map[string]any{
	"image": map[string]any{"repository": "example.org/breeze/breeze", "tag": "v1"},
}}

var namespacedRelease = release{name: "breeze-ns", namespace: "breeze-ns-system", values: map[string]any{
	"image":      map[string]any{"repository": "example.org/breeze/breeze", "tag": "v1"},
	"namespaces": []any{"app-b", "app-c"},
	"replicas":   3,
	"xds":        map[string]any{"port": 15020},
	"istio":      map[string]any{"release": "1.28.3", "revision": "canary"},
	"crds":       map[string]any{"aeraki": false, "breeze": false},
	"log":        map[string]any{"level": "debug", "format": "json"},
}}

// TestRenderDefaults: the default values make the objects an install
// needs, and they fit together: the xDS address written into the
// EnvoyFilters is the chart's Service, the probes reach the health port
// the controller is told, the Service and PDB select the pods.
func TestRenderDefaults(t *testing.T) {
	us := render(t, defaultRelease)
	want := []string{
		"CustomResourceDefinition/applicationprotocols.metaprotocol.aeraki.io",
		"CustomResourceDefinition/authorizationpolicies.security.breeze.io",
		"CustomResourceDefinition/dubboauthorizationpolicies.dubbo.aeraki.io",
		"CustomResourceDefinition/metarouters.metaprotocol.aeraki.io",
		"ClusterRole/breeze-controller",
		"ClusterRoleBinding/breeze-controller",
		"Deployment/breeze-system/breeze-controller",
		"PodDisruptionBudget/breeze-system/breeze-controller",
		"Role/breeze-system/breeze-controller-leader-election",
		"RoleBinding/breeze-system/breeze-controller-leader-election",
		"Service/breeze-system/breeze-controller",
		"ServiceAccount/breeze-system/breeze-controller",
	}
	got := kinds(us)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("rendered objects:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	objs := typed(t, us)
	d, _ := find[*appsv1.Deployment](objs, "breeze-controller")
	svc, _ := find[*corev1.Service](objs, "breeze-controller")
	pdb, _ := find[*policyv1.PodDisruptionBudget](objs, "breeze-controller")
	c := d.Spec.Template.Spec.Containers[0]
	wantArgs := []string{"controller",
		"-xds-address=breeze-controller.breeze-system.svc.cluster.local:15010",
		"-xds-listen=:15010", "-health=:8081", "-metrics=:8080",
		"-leader-elect", "-leader-election-namespace=breeze-system",
		"-upstream-tls=istio", "-log-level=info", "-log-format=text"}
	if !slices.Equal(c.Args, wantArgs) {
		t.Errorf("controller args %q, want %q", c.Args, wantArgs)
	}
	if c.Image != "example.org/breeze/breeze:v1" || !slices.Equal(c.Command, []string{"/breeze"}) {
		t.Errorf("image %q command %q, want example.org/breeze/breeze:v1 and [/breeze] (the Dockerfile's controller target)", c.Image, c.Command)
	}
	if *d.Spec.Replicas != 2 {
		t.Errorf("replicas %d, want 2", *d.Spec.Replicas)
	}
	if d.Spec.Template.Spec.ServiceAccountName != "breeze-controller" {
		t.Errorf("serviceAccountName %q, want breeze-controller", d.Spec.Template.Spec.ServiceAccountName)
	}
	if v := d.Spec.Template.Labels["sidecar.istio.io/inject"]; v != "false" {
		t.Errorf("pod label sidecar.istio.io/inject %q, want \"false\" (the plugins dial the xDS port in plain text)", v)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["xds"] != 15010 || ports["health"] != 8081 || ports["metrics"] != 8080 {
		t.Errorf("container ports %v, want xds 15010, health 8081, metrics 8080", ports)
	}
	for probe, h := range map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
		if h == nil || h.HTTPGet == nil || h.HTTPGet.Path != probe || h.HTTPGet.Port.String() != "health" {
			t.Errorf("probe for %s: %+v, want an HTTP GET of %s on port health", probe, h, probe)
		}
	}
	// The Service is what -xds-address names, and selects the pods.
	svcPorts := map[string]string{}
	for _, p := range svc.Spec.Ports {
		svcPorts[p.Name] = fmt.Sprintf("%d->%s", p.Port, p.TargetPort.String())
	}
	if svcPorts["grpc-xds"] != "15010->xds" || svcPorts["http-metrics"] != "8080->metrics" {
		t.Errorf("Service ports %v, want grpc-xds 15010->xds, http-metrics 8080->metrics", svcPorts)
	}
	for what, sel := range map[string]map[string]string{"Service": svc.Spec.Selector, "PodDisruptionBudget": pdb.Spec.Selector.MatchLabels} {
		for k, v := range sel {
			if d.Spec.Template.Labels[k] != v {
				t.Errorf("%s selects %s=%s, which the pods (labels %v) lack", what, k, v, d.Spec.Template.Labels)
			}
		}
		if len(sel) == 0 {
			t.Errorf("%s selects nothing", what)
		}
	}
	for k, v := range d.Spec.Selector.MatchLabels {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("Deployment selector %s=%s not on its pods' labels %v", k, v, d.Spec.Template.Labels)
		}
	}
	if pdb.Spec.MinAvailable.IntValue() != 1 {
		t.Errorf("PDB minAvailable %s, want 1", pdb.Spec.MinAvailable.String())
	}
	for _, o := range us {
		if o.GetKind() == "CustomResourceDefinition" && o.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
			t.Errorf("CRD %s without helm.sh/resource-policy: keep: uninstall would delete every object of it", o.GetName())
		}
	}
}

// TestRenderNamespaced: a values variant (watched namespaces, another
// port, an Istio release, no CRDs) changes exactly what it should.
func TestRenderNamespaced(t *testing.T) {
	us := render(t, namespacedRelease)
	got := kinds(us)
	slices.Sort(got)
	want := []string{
		"ClusterRole/breeze-ns-controller",
		"ClusterRole/breeze-ns-controller-applicationprotocols",
		"ClusterRoleBinding/breeze-ns-controller-applicationprotocols",
		"Deployment/breeze-ns-system/breeze-ns-controller",
		"PodDisruptionBudget/breeze-ns-system/breeze-ns-controller",
		"Role/breeze-ns-system/breeze-ns-controller-leader-election",
		"RoleBinding/app-b/breeze-ns-controller",
		"RoleBinding/app-c/breeze-ns-controller",
		"RoleBinding/breeze-ns-system/breeze-ns-controller-leader-election",
		"Service/breeze-ns-system/breeze-ns-controller",
		"ServiceAccount/breeze-ns-system/breeze-ns-controller",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("rendered objects:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	objs := typed(t, us)
	d, _ := find[*appsv1.Deployment](objs, "breeze-ns-controller")
	wantArgs := []string{"controller",
		"-xds-address=breeze-ns-controller.breeze-ns-system.svc.cluster.local:15020",
		"-xds-listen=:15020", "-health=:8081", "-metrics=:8080",
		"-leader-elect", "-leader-election-namespace=breeze-ns-system",
		"-namespaces=app-b,app-c", "-upstream-tls=istio", "-istio=1.28.3", "-istio-revision=canary",
		"-log-level=debug", "-log-format=json"}
	if args := d.Spec.Template.Spec.Containers[0].Args; !slices.Equal(args, wantArgs) {
		t.Errorf("controller args %q, want %q", args, wantArgs)
	}
	if *d.Spec.Replicas != 3 {
		t.Errorf("replicas %d, want 3", *d.Spec.Replicas)
	}
}

// TestRenderNeedsImage: without an image the chart says so, rather than
// rendering a Deployment that cannot pull.
func TestRenderNeedsImage(t *testing.T) {
	_, err := renderErr(release{name: "breeze", namespace: "breeze-system"})
	if err == nil || !strings.Contains(err.Error(), "image.repository is required") {
		t.Fatalf("rendering without image.repository: error %v, want one saying image.repository is required", err)
	}
}

var tokenRelease = release{name: "breeze-token", namespace: "breeze-token-system", values: map[string]any{
	"image": map[string]any{"repository": "example.org/breeze/breeze", "tag": "v1"},
	"crds":  map[string]any{"aeraki": false, "breeze": false},
	"xds": map[string]any{
		"tls":  map[string]any{"secretName": "breeze-xds-tls", "sidecarCAFile": "/etc/breeze/ca/ca.crt"},
		"auth": map[string]any{"mode": "token", "audience": "breeze-xds", "sidecarTokenFile": "/var/run/secrets/breeze/token"},
	},
}}

// TestRenderTokenAuth: xds.tls and xds.auth token become the controller's
// flags, the Secret is mounted where they point, and the ServiceAccount
// gets create on tokenreviews (cluster-wide: TokenReviews have no
// namespace), which the default rendering does not grant.
func TestRenderTokenAuth(t *testing.T) {
	us := render(t, tokenRelease)
	objs := typed(t, us)
	d, _ := find[*appsv1.Deployment](objs, "breeze-token-controller")
	c := d.Spec.Template.Spec.Containers[0]
	wantArgs := []string{"controller",
		"-xds-address=breeze-token-controller.breeze-token-system.svc.cluster.local:15010",
		"-xds-listen=:15010", "-health=:8081", "-metrics=:8080",
		"-leader-elect", "-leader-election-namespace=breeze-token-system",
		"-upstream-tls=istio",
		"-xds-tls-cert=/etc/breeze/xds-tls/tls.crt", "-xds-tls-key=/etc/breeze/xds-tls/tls.key", "-xds-sidecar-ca-file=/etc/breeze/ca/ca.crt",
		"-xds-auth=token", "-xds-token-audience=breeze-xds", "-xds-sidecar-token-file=/var/run/secrets/breeze/token",
		"-log-level=info", "-log-format=text"}
	if !slices.Equal(c.Args, wantArgs) {
		t.Errorf("controller args %q, want %q", c.Args, wantArgs)
	}
	vols := d.Spec.Template.Spec.Volumes
	if len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != "/etc/breeze/xds-tls" || len(vols) != 1 ||
		vols[0].Name != c.VolumeMounts[0].Name || vols[0].Secret == nil || vols[0].Secret.SecretName != "breeze-xds-tls" {
		t.Errorf("volume mounts %+v, volumes %+v: want Secret breeze-xds-tls mounted at /etc/breeze/xds-tls", c.VolumeMounts, vols)
	}
	grants := func(objs []runtime.Object, name string) bool {
		cr, ok := find[*rbacv1.ClusterRole](objs, name)
		if !ok {
			return false
		}
		for _, r := range cr.Rules {
			if slices.Contains(r.APIGroups, "authentication.k8s.io") && slices.Contains(r.Resources, "tokenreviews") && slices.Contains(r.Verbs, "create") {
				return true
			}
		}
		return false
	}
	if !grants(objs, "breeze-token-controller-tokenreviews") {
		t.Errorf("no ClusterRole breeze-token-controller-tokenreviews granting create on tokenreviews; objects: %v", kinds(us))
	}
	if _, ok := find[*rbacv1.ClusterRoleBinding](objs, "breeze-token-controller-tokenreviews"); !ok {
		t.Errorf("no ClusterRoleBinding breeze-token-controller-tokenreviews; objects: %v", kinds(us))
	}
	for _, k := range kinds(render(t, defaultRelease)) {
		if strings.Contains(k, "tokenreviews") {
			t.Errorf("the default rendering has %s: TokenReviews only with xds.auth.mode token", k)
		}
	}
}

// TestRenderXDSSecurityNeedsItsParts: a combination the controller would
// refuse at start is refused at render, saying what is missing.
func TestRenderXDSSecurityNeedsItsParts(t *testing.T) {
	for _, tc := range []struct {
		xds  map[string]any
		want string
	}{
		{map[string]any{"tls": map[string]any{"secretName": "s"}}, "xds.tls.sidecarCAFile is required with xds.tls.secretName"},
		{map[string]any{"auth": map[string]any{"mode": "token", "sidecarTokenFile": "/t"}}, "xds.auth.mode token needs xds.tls.secretName"},
		{map[string]any{"tls": map[string]any{"secretName": "s", "sidecarCAFile": "/ca"}, "auth": map[string]any{"mode": "token"}}, "xds.auth.sidecarTokenFile is required with xds.auth.mode token"},
		{map[string]any{"auth": map[string]any{"mode": "mtls"}}, `xds.auth.mode "mtls": want none or token`},
	} {
		_, err := renderErr(release{name: "breeze", namespace: "breeze-system", values: map[string]any{
			"image": map[string]any{"repository": "example.org/breeze/breeze"}, "xds": tc.xds,
		}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("xds %v: error %v, want one saying %q", tc.xds, err, tc.want)
		}
	}
}
