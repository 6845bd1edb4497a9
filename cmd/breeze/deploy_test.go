package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRenderThenValidate(t *testing.T) {
	out := filepath.Join(t.TempDir(), "efs.yaml")
	if err := render([]string{"envoyfilter", "-o", out, "../../envoy-config/istio/greeter.yaml"}); err != nil {
		t.Fatal(err)
	}
	if err := validate([]string{out, "../../envoy-config/envoy.yaml", "../../envoy-config/istio/demo.yaml", "demo.yaml"}); err != nil {
		t.Fatal(err)
	}
}

func TestValidateFails(t *testing.T) {
	data, err := os.ReadFile("../../envoy-config/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(bad, []byte(strings.Replace(string(data), "name: plainText", "name: plaintext", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := validate([]string{bad}); err == nil || !strings.Contains(err.Error(), "1 error") {
		t.Fatalf("got %v", err)
	}
	if err := render([]string{"envoyfilter", bad}); err == nil {
		t.Fatal("rendering a bootstrap: want an error")
	}
}
