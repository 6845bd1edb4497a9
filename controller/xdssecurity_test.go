package controller

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// With XDSCAFile and XDSTokenFile, the outbound EnvoyFilter's plugin config
// connects over TLS with the sidecar's token; without, it stays plaintext.
// A pure computation: no API server.
func TestEnvoyFilterXDSSecurity(t *testing.T) {
	m := &mesh{services: []corev1.Service{{
		ObjectMeta: metav1.ObjectMeta{Name: "greeter", Namespace: "demo"},
		Spec:       corev1.ServiceSpec{ClusterIP: "10.96.0.10", Ports: []corev1.ServicePort{{Name: "tcp-metaprotocol-dubbo-greeter", Port: 20880}}},
	}}}
	outbound := func(s settings) map[string]any {
		t.Helper()
		res := m.compute(s, true)
		for _, f := range res.filters {
			if f.obj.GetName() == "greeter-20880-breeze-outbound" {
				return patch(t, f.obj, 0)
			}
		}
		t.Fatalf("no outbound EnvoyFilter among %d; issues %v", len(res.filters), res.issues)
		return nil
	}
	known := func(string) bool { return true }

	p := outbound(settings{XDSAddress: "breeze-controller.breeze-system.svc:15010", KnownCodec: known,
		XDSCAFile: "/etc/breeze/xds-ca/ca.crt", XDSTokenFile: "/var/run/secrets/breeze/token"})
	if got, _ := find(p["patch"], "ca_file"); got != "/etc/breeze/xds-ca/ca.crt" {
		t.Errorf("plugin config xds.tls.ca_file %v, want /etc/breeze/xds-ca/ca.crt", got)
	}
	if got, _ := find(p["patch"], "token_file"); got != "/var/run/secrets/breeze/token" {
		t.Errorf("plugin config xds.token_file %v, want /var/run/secrets/breeze/token", got)
	}

	p = outbound(settings{XDSAddress: "breeze-controller.breeze-system.svc:15010", KnownCodec: known})
	for _, key := range []string{"tls", "token_file"} {
		if got, ok := find(p["patch"], key); ok {
			t.Errorf("plaintext plugin config has %s: %v", key, got)
		}
	}
}
