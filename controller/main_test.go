package controller

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/breeze-mesh/breeze/internal/kubetest"
	"github.com/breeze-mesh/breeze/internal/testwait"
	// The codecs a port may name.
	_ "github.com/breeze-mesh/breeze/codecs/dubbo"
	_ "github.com/breeze-mesh/breeze/codecs/thrift"
)

// The tests run one real kube-apiserver and etcd (envtest), with Istio's
// and Aeraki's CRDs as their modules ship them, and one controller
// against them, as `breeze controller` runs it. Each test works in a
// namespace of its own.
var (
	env struct {
		rest   *rest.Config
		client client.Client
		xds    string // the controller's xDS address
	}
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

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
	te := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     crds,
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := te.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting envtest:", err)
		return 1
	}
	defer te.Stop()
	env.rest = cfg
	env.client, err = client.New(cfg, client.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	serving := make(chan net.Addr, 1)
	done := make(chan error, 1)
	logOut := io.Discard
	if os.Getenv("CONTROLLER_LOG") != "" {
		logOut = os.Stderr
	}
	go func() {
		done <- Run(ctx, Config{
			Rest:        cfg,
			XDSListen:   "127.0.0.1:0",
			HealthAddr:  "0",
			MetricsAddr: "0",
			Options:     Options{Log: slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelDebug}))},
			OnServing:   func(a net.Addr) { serving <- a },
		})
	}()
	select {
	case a := <-serving:
		env.xds = a.String()
	case err := <-done:
		fmt.Fprintln(os.Stderr, "controller:", err)
		cancel()
		return 1
	}
	code := m.Run()
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "controller stopped with:", err)
		code = 1
	}
	return code
}

// eventually waits for cond to hold, failing with what it last said.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	testwait.For(t, what, 30*time.Second, cond)
}

// namespace creates a namespace for one test.
func namespace(t *testing.T) string {
	t.Helper()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 50 {
		name = name[:50]
	}
	apply(t, fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n", name))
	return name
}

// object parses a manifest.
func object(t *testing.T, manifest string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	js, err := yaml.YAMLToJSON([]byte(manifest))
	if err != nil {
		t.Fatalf("manifest: %v\n%s", err, manifest)
	}
	if err := u.UnmarshalJSON(js); err != nil {
		t.Fatalf("manifest: %v\n%s", err, manifest)
	}
	return u
}

// apply creates an object, or updates it when it exists.
func apply(t *testing.T, manifest string) *unstructured.Unstructured {
	t.Helper()
	u := object(t, manifest)
	ctx := context.Background()
	cur := &unstructured.Unstructured{}
	cur.SetGroupVersionKind(u.GroupVersionKind())
	if err := env.client.Get(ctx, client.ObjectKeyFromObject(u), cur); err == nil {
		// The controller writes MetaRouter statuses: another version may
		// come between the read and the write.
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := env.client.Get(ctx, client.ObjectKeyFromObject(u), cur); err != nil {
				return err
			}
			u.SetResourceVersion(cur.GetResourceVersion())
			return env.client.Update(ctx, u)
		})
		if err != nil {
			t.Fatalf("updating %s %s: %v", u.GetKind(), u.GetName(), err)
		}
		return u
	}
	if err := env.client.Create(ctx, u); err != nil {
		t.Fatalf("creating %s %s: %v", u.GetKind(), u.GetName(), err)
	}
	return u
}

func objectMeta(ns, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name}
}
