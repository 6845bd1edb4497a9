package helm

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/breeze-mesh/breeze/controller"
	"github.com/breeze-mesh/breeze/internal/kubetest"
	"github.com/breeze-mesh/breeze/internal/testwait"
	// The codec the test's Service port names.
	_ "github.com/breeze-mesh/breeze/codecs/dubbo"
)

// One real kube-apiserver and etcd (envtest) with Istio's CRDs only, as a
// cluster with Istio and without Aeraki has: the chart brings the rest.
// The API server enforces OwnerReferencesPermissionEnforcement, as some
// distributions do, so that the RBAC is proven against the stricter case.
var env struct {
	rest       *rest.Config
	kubeconfig []byte // the same administrator, for the controller processes
	admin      client.Client
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(runChild(spec))
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	assets, err := kubetest.Assets()
	if err != nil {
		// No skip: `make test` builds it (scripts/kube-peer.sh install).
		fmt.Fprintln(os.Stderr, "FAIL: no Kubernetes API server for envtest (bash scripts/kube-peer.sh install):", err)
		return 1
	}
	istioCRDs, err := kubetest.CRDFile("istio.io/api")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	te := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{istioCRDs},
		ErrorIfCRDPathMissing: true,
	}
	te.ControlPlane.GetAPIServer().Configure().Append("enable-admission-plugins", "OwnerReferencesPermissionEnforcement")
	cfg, err := te.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting envtest:", err)
		return 1
	}
	defer te.Stop()
	env.rest = cfg
	admin, err := te.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err == nil {
		env.kubeconfig, err = admin.KubeConfig()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubeconfig for the controller processes:", err)
		return 1
	}
	if env.admin, err = client.New(cfg, client.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// eventually waits for cond to hold, failing with what it last said.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	testwait.For(t, what, 30*time.Second, cond)
}

func ensureNamespace(t *testing.T, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := env.admin.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
}

// install applies what the chart renders, as `helm install` would, with
// the API server's strict field validation: an unknown or misplaced
// field is refused, not dropped. CRDs must become Established.
func install(t *testing.T, r release) {
	t.Helper()
	ensureNamespace(t, r.namespace)
	ctx := context.Background()
	for _, o := range render(t, r) {
		if o.GetNamespace() != "" {
			ensureNamespace(t, o.GetNamespace())
		}
		if err := env.admin.Create(ctx, o, client.FieldValidation("Strict")); err != nil {
			t.Fatalf("the API server refused %s %s: %v", o.GetKind(), o.GetName(), err)
		}
		if o.GetKind() != "CustomResourceDefinition" {
			continue
		}
		eventually(t, "CRD "+o.GetName()+" Established", func() (bool, string) {
			var crd apiextensionsv1.CustomResourceDefinition
			if err := env.admin.Get(ctx, client.ObjectKey{Name: o.GetName()}, &crd); err != nil {
				return false, err.Error()
			}
			for _, c := range crd.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					return true, ""
				}
			}
			return false, fmt.Sprintf("conditions %v", crd.Status.Conditions)
		})
	}
}

// asServiceAccount is a rest.Config acting as the chart's ServiceAccount
// (the API server checks its RBAC on every request).
func asServiceAccount(r release, sa string) *rest.Config {
	cfg := rest.CopyConfig(env.rest)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + r.namespace + ":" + sa}
	return cfg
}

// runController runs the controller as `breeze controller` runs in the
// chart's Deployment (leader election in the release namespace, the
// watched namespaces), under the chart's ServiceAccount, until the test
// ends. In a process of its own, as in the pod: controller-runtime allows
// one controller of a name per process.
func runController(t *testing.T, r release, sa string, namespaces []string, more ...func(*childSpec)) {
	t.Helper()
	cs := childSpec{
		Kubeconfig: env.kubeconfig, User: "system:serviceaccount:" + r.namespace + ":" + sa,
		Namespaces: namespaces, LeaseNamespace: r.namespace,
		XDSAddress: sa + "." + r.namespace + ".svc.cluster.local:15010",
	}
	for _, m := range more {
		m(&cs)
	}
	spec, err := json.Marshal(cs)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close() // the child stops when its stdin closes
		if err := cmd.Wait(); err != nil {
			t.Errorf("controller process: %v", err)
		}
	})
	first := make(chan string, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		first <- fmt.Sprintf("%q (%v)", line, err)
		io.Copy(io.Discard, stdout)
	}()
	select {
	case said := <-first:
		if said != fmt.Sprintf("%q (%v)", "SERVING\n", nil) {
			t.Fatalf("the controller under the chart's ServiceAccount did not serve xDS: it printed %s; rerun with CONTROLLER_LOG=1 to see why", said)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("the controller under the chart's ServiceAccount printed nothing within a minute; rerun with CONTROLLER_LOG=1 to see why")
	}
}

// childEnv carries a childSpec to the test binary run as a controller.
const childEnv = "BREEZE_HELM_TEST_CONTROLLER"

type childSpec struct {
	Kubeconfig     []byte
	User           string
	Namespaces     []string
	LeaseNamespace string
	XDSAddress     string
	// ZooKeeper, if set, is followed as `-zookeeper` (registry_test.go).
	ZooKeeper, RegistryNamespace string
}

// runChild is the test binary as a controller process: it prints SERVING
// once the xDS server serves, and stops when its stdin closes.
func runChild(specJSON string) int {
	var spec childSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(spec.Kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg.Impersonate = rest.ImpersonationConfig{UserName: spec.User}
	logOut := io.Discard
	if os.Getenv("CONTROLLER_LOG") != "" {
		logOut = os.Stderr
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	run := controller.Config{
		Rest:                    cfg,
		Namespaces:              spec.Namespaces,
		XDSListen:               "127.0.0.1:0",
		HealthAddr:              "0",
		MetricsAddr:             "0",
		LeaderElect:             true,
		LeaderElectionNamespace: spec.LeaseNamespace,
		Options: controller.Options{
			XDSAddress: spec.XDSAddress,
			Log:        slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelDebug})),
		},
		OnServing: func(net.Addr) { fmt.Println("SERVING") },
	}
	registryConfig(&run, spec)
	if err := controller.Run(ctx, run); err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		return 1
	}
	return 0
}

func apply(t *testing.T, manifest string) {
	t.Helper()
	u := parse(t, manifest)
	if err := env.admin.Create(context.Background(), u); err != nil {
		t.Fatalf("creating %s %s: %v", u.GetKind(), u.GetName(), err)
	}
}

func parse(t *testing.T, manifest string) *unstructured.Unstructured {
	t.Helper()
	var u unstructured.Unstructured
	js, err := yaml.YAMLToJSON([]byte(manifest))
	if err != nil {
		t.Fatalf("manifest: %v\n%s", err, manifest)
	}
	if err := u.UnmarshalJSON(js); err != nil {
		t.Fatalf("manifest: %v\n%s", err, manifest)
	}
	return &u
}

// appObjects creates a Service with a Breeze port, a MetaRouter for it
// and an ingress Gateway exposing it in ns.
func appObjects(t *testing.T, ns string) {
	t.Helper()
	ensureNamespace(t, ns)
	host := "greeter." + ns + ".svc.cluster.local"
	apply(t, `
apiVersion: v1
kind: Service
metadata: {name: greeter, namespace: `+ns+`}
spec:
  selector: {app: greeter}
  ports:
  - {name: tcp-metaprotocol-dubbo-greeter, port: 20880, targetPort: 20880}
`)
	apply(t, `
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: greeter, namespace: `+ns+`}
spec:
  hosts: [`+host+`]
  routes:
  - name: all
    route:
    - destination: {host: `+host+`}
`)
	apply(t, `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: `+ns+`}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 20880, name: tcp-dubbo, protocol: TCP}
    hosts: ["./*"]
`)
}

// waitWrites waits for what only a controller with enough RBAC writes:
// the Service's EnvoyFilters (owned by the Service, blockOwnerDeletion),
// the Gateway's (owned by the Gateway: it reads Gateways) and the
// MetaRouter's status.
func waitWrites(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	for _, name := range []string{"greeter-20880-breeze-outbound", "greeter-20880-breeze-inbound", "ingress-20880-breeze-gateway"} {
		eventually(t, "EnvoyFilter "+ns+"/"+name, func() (bool, string) {
			u := &unstructured.Unstructured{}
			u.SetAPIVersion("networking.istio.io/v1alpha3")
			u.SetKind("EnvoyFilter")
			if err := env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, u); err != nil {
				return false, err.Error()
			}
			return true, ""
		})
	}
	eventually(t, "MetaRouter "+ns+"/greeter status", func() (bool, string) {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("metaprotocol.aeraki.io/v1alpha1")
		u.SetKind("MetaRouter")
		if err := env.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "greeter"}, u); err != nil {
			return false, err.Error()
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		return len(conds) > 0, fmt.Sprintf("status %v", u.Object["status"])
	})
}

// waitLeader waits for the controller to hold the chart's Lease.
func waitLeader(t *testing.T, ns string) {
	t.Helper()
	eventually(t, "the Lease "+ns+"/breeze-controller held", func() (bool, string) {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("coordination.k8s.io/v1")
		u.SetKind("Lease")
		if err := env.admin.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "breeze-controller"}, u); err != nil {
			return false, err.Error()
		}
		h, _, _ := unstructured.NestedString(u.Object, "spec", "holderIdentity")
		return h != "", fmt.Sprintf("holderIdentity %q", h)
	})
}

// refused checks that the ServiceAccount may not do what the chart does
// not grant.
func refused(t *testing.T, c client.Client, what string, do func(context.Context, client.Client) error) {
	t.Helper()
	err := do(context.Background(), c)
	if !apierrors.IsForbidden(err) {
		t.Errorf("%s as the chart's ServiceAccount: error %v, want Forbidden", what, err)
	}
}

func saClient(t *testing.T, r release, sa string) client.Client {
	t.Helper()
	c, err := client.New(asServiceAccount(r, sa), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestInstallDefaults: the default rendering installs on a real API
// server, and the controller, with exactly the chart's RBAC, writes
// EnvoyFilters and MetaRouter statuses in any namespace and holds its
// Lease; what the chart does not grant is refused.
func TestInstallDefaults(t *testing.T) {
	install(t, defaultRelease)
	runController(t, defaultRelease, "breeze-controller", nil)
	waitLeader(t, defaultRelease.namespace)
	appObjects(t, "app-a")
	waitWrites(t, "app-a")

	c := saClient(t, defaultRelease, "breeze-controller")
	refused(t, c, "deleting a Service", func(ctx context.Context, c client.Client) error {
		return c.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "app-a", Name: "greeter"}})
	})
	refused(t, c, "listing Secrets", func(ctx context.Context, c client.Client) error {
		return c.List(ctx, &corev1.SecretList{})
	})
	refused(t, c, "updating a MetaRouter's spec", func(ctx context.Context, c client.Client) error {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("metaprotocol.aeraki.io/v1alpha1")
		u.SetKind("MetaRouter")
		if err := c.Get(ctx, client.ObjectKey{Namespace: "app-a", Name: "greeter"}, u); err != nil {
			return err
		}
		u.Object["spec"].(map[string]any)["hosts"] = []any{"other.example"}
		return c.Update(ctx, u)
	})
	refused(t, c, "creating a Lease outside the release namespace", func(ctx context.Context, c client.Client) error {
		return c.Create(ctx, parse(t, "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: x, namespace: app-a}\n"))
	})
}

// TestInstallNamespaced: the values variant (watched namespaces, no
// CRDs: the default release installed them) works with RoleBindings in
// the watched namespaces only, and reads nothing elsewhere.
func TestInstallNamespaced(t *testing.T) {
	// The CRDs come from the default release (this one installs none):
	// install it first unless TestInstallDefaults did.
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := env.admin.Get(context.Background(), client.ObjectKey{Name: "metarouters.metaprotocol.aeraki.io"}, crd); apierrors.IsNotFound(err) {
		install(t, defaultRelease)
	}
	install(t, namespacedRelease)
	// The watched namespaces are empty when it starts: it must serve
	// (and be ready) all the same.
	runController(t, namespacedRelease, "breeze-ns-controller", []string{"app-b", "app-c"})
	waitLeader(t, namespacedRelease.namespace)
	appObjects(t, "app-b")
	waitWrites(t, "app-b")

	c := saClient(t, namespacedRelease, "breeze-ns-controller")
	ensureNamespace(t, "app-other")
	refused(t, c, "listing Services of an unwatched namespace", func(ctx context.Context, c client.Client) error {
		return c.List(ctx, &corev1.ServiceList{}, client.InNamespace("app-other"))
	})
	refused(t, c, "listing Gateways of an unwatched namespace", func(ctx context.Context, c client.Client) error {
		l := &unstructured.UnstructuredList{}
		l.SetAPIVersion("networking.istio.io/v1")
		l.SetKind("GatewayList")
		return c.List(ctx, l, client.InNamespace("app-other"))
	})
	refused(t, c, "listing Services of every namespace", func(ctx context.Context, c client.Client) error {
		return c.List(ctx, &corev1.ServiceList{})
	})
}

// tokenReview is what the controller sends for each xDS stream with
// -xds-auth token.
func tokenReview(ctx context.Context, c client.Client) error {
	return c.Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: "not-a-token", Audiences: []string{"breeze"}}})
}

// TestInstallTokenAuth: with xds.auth.mode token, the chart's
// ServiceAccount may create TokenReviews (the API server answers, here
// "not authenticated"); without it (the default release), it may not.
func TestInstallTokenAuth(t *testing.T) {
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := env.admin.Get(context.Background(), client.ObjectKey{Name: "metarouters.metaprotocol.aeraki.io"}, crd); apierrors.IsNotFound(err) {
		install(t, defaultRelease)
	}
	install(t, tokenRelease)
	tr := &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: "not-a-token", Audiences: []string{"breeze"}}}
	if err := saClient(t, tokenRelease, "breeze-token-controller").Create(context.Background(), tr); err != nil {
		t.Fatalf("creating a TokenReview as the token release's ServiceAccount: %v, want it allowed", err)
	}
	t.Logf("TokenReview as breeze-token-controller: allowed, authenticated=%t (%s)", tr.Status.Authenticated, tr.Status.Error)
	refused(t, saClient(t, defaultRelease, "breeze-controller"), "creating a TokenReview without xds.auth.mode token", tokenReview)
}
