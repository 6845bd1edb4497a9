package helm

import (
	"context"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/breeze-mesh/breeze/controller"
	"github.com/breeze-mesh/breeze/registry/zookeeper"
	"github.com/breeze-mesh/breeze/registry/zookeeper/zktest"
)

// The chart with registry sync on: a ZooKeeper, ServiceEntries into
// dubbo-registry.
func registryRelease(zkServers string) release {
	return release{name: "breeze-reg", namespace: "breeze-reg-system", values: map[string]any{
		"image":    map[string]any{"repository": "example.org/breeze/breeze", "tag": "v1"},
		"crds":     map[string]any{"aeraki": false, "breeze": false},
		"registry": map[string]any{"zookeeper": zkServers, "namespace": "dubbo-registry"},
	}}
}

// registryConfig is what the chart's registry arguments make of the
// controller in its process (cmd/breeze/controller.go does the same from
// the flags).
func registryConfig(run *controller.Config, spec childSpec) {
	if spec.ZooKeeper == "" {
		return
	}
	run.Registry = &zookeeper.Registry{Servers: strings.Split(spec.ZooKeeper, ","), Log: run.Options.Log}
	run.RegistryKind, run.RegistryNamespace = "zookeeper", spec.RegistryNamespace
}

// writesServiceEntries reports whether a rule grants a write on
// ServiceEntries.
func writesServiceEntries(rules []rbacv1.PolicyRule) bool {
	for _, r := range rules {
		if slices.Contains(r.APIGroups, "networking.istio.io") && slices.Contains(r.Resources, "serviceentries") &&
			slices.ContainsFunc(r.Verbs, func(v string) bool { return v == "create" || v == "update" || v == "delete" || v == "*" }) {
			return true
		}
	}
	return false
}

// TestRenderRegistry: registry.zookeeper adds the controller's registry
// arguments and a Role in registry.namespace, the one place it may write
// ServiceEntries; without it no rule of the chart writes them; a
// registry.namespace outside the watched namespaces is refused.
func TestRenderRegistry(t *testing.T) {
	r := registryRelease("zk-0.zk:2181,zk-1.zk:2181")
	us := render(t, r)
	got := kinds(us)
	for _, want := range []string{"Role/dubbo-registry/breeze-reg-controller-registry", "RoleBinding/dubbo-registry/breeze-reg-controller-registry"} {
		if !slices.Contains(got, want) {
			t.Errorf("rendered objects %v: no %s", got, want)
		}
	}
	objs := typed(t, us)
	role, _ := find[*rbacv1.Role](objs, "breeze-reg-controller-registry")
	if role == nil || len(role.Rules) != 1 || !slices.Equal(role.Rules[0].Resources, []string{"serviceentries"}) ||
		!slices.Equal(role.Rules[0].Verbs, []string{"get", "list", "watch", "create", "update", "delete"}) {
		t.Errorf("registry Role %+v, want get, list, watch, create, update, delete on serviceentries only", role)
	}
	for _, o := range objs {
		if cr, ok := o.(*rbacv1.ClusterRole); ok && writesServiceEntries(cr.Rules) {
			t.Errorf("ClusterRole %s writes ServiceEntries: the chart may write them in registry.namespace only", cr.Name)
		}
	}
	d, _ := find[*appsv1.Deployment](objs, "breeze-reg-controller")
	args := d.Spec.Template.Spec.Containers[0].Args
	wantTail := []string{"-log-format=text", "-zookeeper=zk-0.zk:2181,zk-1.zk:2181", "-zookeeper-root=/dubbo",
		"-registry-namespace=dubbo-registry", "-registry-vips=240.241.0.0/16"}
	if len(args) < len(wantTail) || !slices.Equal(args[len(args)-len(wantTail):], wantTail) {
		t.Errorf("controller args %q, want them to end with %q", args, wantTail)
	}

	nacos := registryRelease("")
	nacos.values["registry"] = map[string]any{"nacos": "nacos:8848", "nacosNamespace": "dev", "namespace": "dubbo-registry"}
	d, _ = find[*appsv1.Deployment](typed(t, render(t, nacos)), "breeze-reg-controller")
	args = d.Spec.Template.Spec.Containers[0].Args
	wantTail = []string{"-log-format=text", "-nacos=nacos:8848", "-nacos-namespace=dev", "-nacos-group=DEFAULT_GROUP", "-nacos-list-interval=1s",
		"-registry-namespace=dubbo-registry", "-registry-vips=240.241.0.0/16"}
	if len(args) < len(wantTail) || !slices.Equal(args[len(args)-len(wantTail):], wantTail) {
		t.Errorf("controller args with registry.nacos %q, want them to end with %q", args, wantTail)
	}

	for _, o := range typed(t, render(t, defaultRelease)) {
		switch v := o.(type) {
		case *rbacv1.ClusterRole:
			if writesServiceEntries(v.Rules) {
				t.Errorf("default values: ClusterRole %s writes ServiceEntries", v.Name)
			}
		case *rbacv1.Role:
			if writesServiceEntries(v.Rules) {
				t.Errorf("default values: Role %s/%s writes ServiceEntries", v.Namespace, v.Name)
			}
		}
	}

	outside := registryRelease("zk:2181")
	outside.values["namespaces"] = []any{"app-b"}
	_, err := renderErr(outside)
	if err == nil || !strings.Contains(err.Error(), "registry.namespace dubbo-registry must be one of namespaces [app-b]") {
		t.Errorf("registry.namespace outside namespaces: error %v, want the chart to refuse it", err)
	}
}

// TestInstallRegistry: installed with registry.zookeeper pointing at a
// real ZooKeeper holding a provider as Dubbo Java registers it, the
// controller under the chart's ServiceAccount (leader elected) writes its
// ServiceEntry into registry.namespace (and the EnvoyFilter for it); the
// same account may not write ServiceEntries elsewhere, and the account of
// a release without the value may not write them at all.
func TestInstallRegistry(t *testing.T) {
	zs := zktest.Start(t)
	raw, err := os.ReadFile("../../registry/testdata/dubbo-java-3.3.6/interface-provider.txt")
	if err != nil {
		t.Fatal(err)
	}
	node := strings.Replace(strings.TrimSpace(string(raw)), "127.0.0.1%3A38367", "10.0.0.1%3A20880", 1)
	conn, _, err := zk.Connect([]string{zs.Addr}, 10*time.Second, zk.WithLogger(quietZK{}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, p := range []string{"/dubbo", "/dubbo/org.breeze.Greeter", "/dubbo/org.breeze.Greeter/providers", "/dubbo/org.breeze.Greeter/providers/" + node} {
		flags := int32(0)
		if strings.HasSuffix(p, node) {
			flags = zk.FlagEphemeral
		}
		if _, err := conn.Create(p, nil, flags, zk.WorldACL(zk.PermAll)); err != nil && err != zk.ErrNodeExists {
			t.Fatalf("create %s: %v", p, err)
		}
	}

	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := env.admin.Get(context.Background(), client.ObjectKey{Name: "metarouters.metaprotocol.aeraki.io"}, crd); apierrors.IsNotFound(err) {
		install(t, defaultRelease) // the CRDs, and the release without registry
	}
	r := registryRelease(zs.Addr)
	install(t, r)
	runController(t, r, "breeze-reg-controller", nil, func(cs *childSpec) {
		cs.ZooKeeper, cs.RegistryNamespace = zs.Addr, "dubbo-registry"
	})
	waitLeader(t, r.namespace)
	ctx := context.Background()
	get := func(kind, apiVersion, name string) (*unstructured.Unstructured, error) {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion(apiVersion)
		u.SetKind(kind)
		return u, env.admin.Get(ctx, client.ObjectKey{Namespace: "dubbo-registry", Name: name}, u)
	}
	eventually(t, "ServiceEntry dubbo-registry/dubbo-org.breeze.greeter written by the chart's ServiceAccount", func() (bool, string) {
		u, err := get("ServiceEntry", "networking.istio.io/v1", "dubbo-org.breeze.greeter")
		if err != nil {
			return false, err.Error()
		}
		return u.GetLabels()["breeze.io/source-kind"] == "registry", "labels " + strings.Join(slices.Sorted(maps.Keys(u.GetLabels())), ",")
	})
	eventually(t, "its EnvoyFilter", func() (bool, string) {
		_, err := get("EnvoyFilter", "networking.istio.io/v1alpha3", "dubbo-org-breeze-greeter-20880-breeze-outbound")
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	t.Logf("as system:serviceaccount:%s:breeze-reg-controller: ServiceEntry and EnvoyFilter dubbo-org.breeze.greeter written in dubbo-registry", r.namespace)

	se := func(ns string) *unstructured.Unstructured {
		return parse(t, "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: x, namespace: "+ns+"}\nspec: {hosts: [x.example], ports: [{number: 1, name: tcp, protocol: TCP}]}\n")
	}
	ensureNamespace(t, "app-reg-other")
	refused(t, saClient(t, r, "breeze-reg-controller"), "creating a ServiceEntry outside registry.namespace", func(ctx context.Context, c client.Client) error {
		return c.Create(ctx, se("app-reg-other"))
	})
	without := saClient(t, defaultRelease, "breeze-controller")
	refused(t, without, "creating a ServiceEntry without registry values", func(ctx context.Context, c client.Client) error {
		return c.Create(ctx, se("dubbo-registry"))
	})
	refused(t, without, "deleting the registry's ServiceEntry without registry values", func(ctx context.Context, c client.Client) error {
		u, err := get("ServiceEntry", "networking.istio.io/v1", "dubbo-org.breeze.greeter")
		if err != nil {
			return err
		}
		return c.Delete(ctx, u)
	})
}

type quietZK struct{}

func (quietZK) Printf(string, ...any) {}
