package controlplane

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/breeze-mesh/breeze/internal/testpki"
	"github.com/breeze-mesh/breeze/xds/client"
)

// kubeAPIServer starts a real kube-apiserver and etcd (envtest) built by
// scripts/kube-peer.sh; without them the test is skipped, except in CI.
func kubeAPIServer(t *testing.T) kubernetes.Interface {
	t.Helper()
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		if out, err := exec.Command("bash", "../scripts/kube-peer.sh", "assets").Output(); err == nil {
			dir = strings.TrimSpace(string(out))
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "kube-apiserver")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no kube-apiserver (build it with: bash scripts/kube-peer.sh install): %v", err)
		}
		t.Skipf("no kube-apiserver (build it with: bash scripts/kube-peer.sh install): %v", err)
	}
	te := &envtest.Environment{BinaryAssetsDirectory: dir}
	cfg, err := te.Start()
	if err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Cleanup(func() { te.Stop() })
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// serviceAccountToken creates the service account and requests a token of
// it for audience, as the kubelet does for a projected token volume.
func serviceAccountToken(t *testing.T, cs kubernetes.Interface, name, audience string) string {
	t.Helper()
	ctx := context.Background()
	sas := cs.CoreV1().ServiceAccounts("default")
	if _, err := sas.Get(ctx, name, metav1.GetOptions{}); err != nil {
		if _, err := sas.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := sas.CreateToken(ctx, name, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s: %v", name, err)
	}
	return tr.Status.Token
}

func TestTokenReviewAgainstKubeAPIServer(t *testing.T) {
	cs := kubeAPIServer(t)
	dir := t.TempDir()
	ca := testpki.New(t, dir, "ca")
	srv, addr, serverLog := startSecureServer(t, ca, TokenReview{Reviews: cs.AuthenticationV1().TokenReviews(), Audiences: []string{"breeze"}})
	tlsOpts := &client.TLS{CAFile: ca.CAFile, ServerName: testpki.ServerName}
	tokenFile := func(token string) string {
		f, err := os.CreateTemp(dir, "token")
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(token)
		f.Close()
		return f.Name()
	}

	t.Run("service account token for audience breeze is served", func(t *testing.T) {
		served, log := connect(t, addr, client.Options{TLS: tlsOpts, TokenFile: tokenFile(serviceAccountToken(t, cs, "proxy", "breeze"))})
		waitServed(t, served, log)
		if !strings.Contains(serverLog.String(), "identity=system:serviceaccount:default:proxy") {
			t.Errorf("server log does not name the proxy's service account:\n%s", serverLog)
		}
	})
	t.Run("no token", func(t *testing.T) {
		served, log := connect(t, addr, client.Options{TLS: tlsOpts})
		assertRefused(t, srv, served, log, serverLog, RefusedNoToken)
	})
	t.Run("wrong audience", func(t *testing.T) {
		before := srv.Refused(RefusedInvalidToken)
		served, log := connect(t, addr, client.Options{TLS: tlsOpts, TokenFile: tokenFile(serviceAccountToken(t, cs, "proxy", "istio-ca"))})
		assertRefused(t, srv, served, log, serverLog, RefusedInvalidToken)
		if srv.Refused(RefusedInvalidToken) == before {
			t.Errorf("invalid_token refusals stayed at %d", before)
		}
		if !strings.Contains(log.String(), "audience") {
			t.Errorf("client log does not say the audience is wrong:\n%s", log)
		}
	})
	t.Run("token of a deleted service account", func(t *testing.T) {
		token := serviceAccountToken(t, cs, "gone", "breeze")
		if err := cs.CoreV1().ServiceAccounts("default").Delete(context.Background(), "gone", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		before := srv.Refused(RefusedInvalidToken)
		served, log := connect(t, addr, client.Options{TLS: tlsOpts, TokenFile: tokenFile(token)})
		waitFor(t, "a refusal of the deleted account's token", func() bool {
			return srv.Refused(RefusedInvalidToken) > before && strings.Contains(log.String(), RefusedInvalidToken)
		}, func() string { return "server log:\n" + serverLog.String() + "client log:\n" + log.String() })
		select {
		case <-served:
			t.Fatal("the token of a deleted service account was served")
		default:
		}
	})
	t.Run("rotated token read on reconnect", func(t *testing.T) {
		file := tokenFile("not-a-token")
		served, log := connect(t, addr, client.Options{TLS: tlsOpts, TokenFile: file})
		before := srv.Refused(RefusedInvalidToken)
		waitFor(t, "a refusal of the stale token", func() bool { return srv.Refused(RefusedInvalidToken) > before }, log.String)
		writeFile(t, file, serviceAccountToken(t, cs, "proxy", "breeze"))
		waitServed(t, served, log)
	})
}
