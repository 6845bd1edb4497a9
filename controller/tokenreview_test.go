package controller

import (
	"context"
	"os"
	"strings"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/breeze-mesh/breeze/controlplane"
	"github.com/breeze-mesh/breeze/internal/testpki"
	"github.com/breeze-mesh/breeze/internal/xdstest"
	"github.com/breeze-mesh/breeze/xds/client"
)

// serviceAccountToken creates the service account and requests a token of
// it for audience, as the kubelet does for a projected token volume.
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
		t.Fatalf("TokenRequest for %s: %v", name, err)
	}
	return tr.Status.Token
}

func TestTokenReviewAgainstKubeAPIServer(t *testing.T) {
	cs, err := kubernetes.NewForConfig(env.rest)
	if err != nil {
		t.Fatal(err)
	}
	ns := namespace(t)
	dir := t.TempDir()
	ca := testpki.New(t, dir, "ca")
	srv, addr, serverLog := xdstest.StartSecureServer(t, ca, TokenReview{Reviews: cs.AuthenticationV1().TokenReviews(), Audiences: []string{"breeze"}})
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
		served, log := xdstest.Connect(t, addr, client.Options{TLS: tlsOpts, TokenFile: tokenFile(serviceAccountToken(t, cs, ns, "proxy", "breeze"))})
		xdstest.WaitServed(t, served, log)
		if !strings.Contains(serverLog.String(), "identity=system:serviceaccount:"+ns+":proxy") {
			t.Errorf("server log does not name the proxy's service account:\n%s", serverLog)
		}
	})
	t.Run("no token", func(t *testing.T) {
		served, log := xdstest.Connect(t, addr, client.Options{TLS: tlsOpts})
		xdstest.AssertRefused(t, srv, served, log, serverLog, controlplane.RefusedNoToken)
	})
	t.Run("wrong audience", func(t *testing.T) {
		before := srv.Refused(controlplane.RefusedInvalidToken)
		served, log := xdstest.Connect(t, addr, client.Options{TLS: tlsOpts, TokenFile: tokenFile(serviceAccountToken(t, cs, ns, "proxy", "istio-ca"))})
		xdstest.AssertRefused(t, srv, served, log, serverLog, controlplane.RefusedInvalidToken)
		if srv.Refused(controlplane.RefusedInvalidToken) == before {
			t.Errorf("invalid_token refusals stayed at %d", before)
		}
		if !strings.Contains(log.String(), "audience") {
			t.Errorf("client log does not say the audience is wrong:\n%s", log)
		}
	})
	t.Run("token of a deleted service account", func(t *testing.T) {
		token := serviceAccountToken(t, cs, ns, "gone", "breeze")
		if err := cs.CoreV1().ServiceAccounts(ns).Delete(context.Background(), "gone", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		before := srv.Refused(controlplane.RefusedInvalidToken)
		served, log := xdstest.Connect(t, addr, client.Options{TLS: tlsOpts, TokenFile: tokenFile(token)})
		xdstest.WaitFor(t, "a refusal of the deleted account's token", func() bool {
			return srv.Refused(controlplane.RefusedInvalidToken) > before && strings.Contains(log.String(), controlplane.RefusedInvalidToken)
		}, func() string { return "server log:\n" + serverLog.String() + "client log:\n" + log.String() })
		select {
		case <-served:
			t.Fatal("the token of a deleted service account was served")
		default:
		}
	})
	t.Run("rotated token read on reconnect", func(t *testing.T) {
		file := tokenFile("not-a-token")
		served, log := xdstest.Connect(t, addr, client.Options{TLS: tlsOpts, TokenFile: file})
		before := srv.Refused(controlplane.RefusedInvalidToken)
		xdstest.WaitFor(t, "a refusal of the stale token", func() bool { return srv.Refused(controlplane.RefusedInvalidToken) > before }, log.String)
		xdstest.WriteFile(t, file, serviceAccountToken(t, cs, ns, "proxy", "breeze"))
		xdstest.WaitServed(t, served, log)
	})
}
