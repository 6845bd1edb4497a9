// Package kubetest finds what the tests that start a real Kubernetes API
// server (controller-runtime's envtest) need: the kube-apiserver and etcd
// binaries scripts/kube-peer.sh builds, and the CRD files Istio and Aeraki
// publish in their API modules.
package kubetest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/breeze-mesh/breeze/internal/testwait"
)

// Assets is the folder holding kube-apiserver and etcd: $KUBEBUILDER_ASSETS
// (the Makefile sets it), else what scripts/kube-peer.sh says. An error
// names the command that builds them.
func Assets() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		_, self, _, _ := runtime.Caller(0)
		script := filepath.Join(filepath.Dir(self), "..", "..", "scripts", "kube-peer.sh")
		out, err := exec.Command("bash", script, "assets").Output()
		if err != nil {
			return "", fmt.Errorf("scripts/kube-peer.sh assets: %w", err)
		}
		dir = strings.TrimSpace(string(out))
	}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			return "", fmt.Errorf("%s: %w (build them with: bash scripts/kube-peer.sh install)", bin, err)
		}
	}
	return dir, nil
}

// CRDFile is a module's CRD file (kubernetes/customresourcedefinitions.gen.yaml,
// as istio.io/api and github.com/aeraki-mesh/api publish it), read where
// the module cache of the calling test's module has it.
func CRDFile(module string) (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", module).Output()
	if err != nil {
		return "", fmt.Errorf("go list -m %s: %w", module, err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "kubernetes", "customresourcedefinitions.gen.yaml"), nil
}

// MeshCRDFiles are Istio's and Aeraki's CRD files, the kinds the
// controller watches.
func MeshCRDFiles() ([]string, error) {
	var files []string
	for _, mod := range []string{"istio.io/api", "github.com/aeraki-mesh/api"} {
		f, err := CRDFile(mod)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

// WaitEvent waits for an Event with reason on the object kind/name of
// namespace ns and returns it; after within it fails the test with the
// events it saw.
func WaitEvent(t testing.TB, c client.Client, within time.Duration, ns, kind, name, reason string) corev1.Event {
	t.Helper()
	var found corev1.Event
	testwait.For(t, fmt.Sprintf("an Event %s on %s %s", reason, kind, name), within, func() (bool, string) {
		var l corev1.EventList
		if err := c.List(context.Background(), &l, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, e := range l.Items {
			seen = append(seen, e.InvolvedObject.Kind+"/"+e.InvolvedObject.Name+":"+e.Reason)
			if e.InvolvedObject.Kind == kind && e.InvolvedObject.Name == name && e.Reason == reason {
				found = e
				return true, ""
			}
		}
		return false, fmt.Sprint(seen)
	})
	return found
}
