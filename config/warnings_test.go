package config

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

const connectTimeoutWarning = "deprecated and ignored: Envoy's plainText cluster sets the connect timeout of every upstream connection Breeze opens (breeze run: 5s); set connect_timeout on the plainText cluster instead, and remove this field"

func TestWarningsNone(t *testing.T) {
	if ws := Warnings(validConfig()); ws != nil {
		t.Errorf("Warnings = %q, want none", ws)
	}
	if ws := Warnings(nil); ws != nil {
		t.Errorf("Warnings(nil) = %q, want none", ws)
	}
	if ws := RunnerWarnings(readmeRunner()); ws != nil {
		t.Errorf("RunnerWarnings = %q, want none", ws)
	}
}

// An old config that sets connect_timeout still validates, and says once
// that the field has no effect and where the timeout is set instead.
func TestWarningsConnectTimeout(t *testing.T) {
	c := validConfig()
	c.Clusters[1].ConnectTimeout = durationpb.New(1500 * time.Millisecond)
	if err := Validate(c); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	want := []string{"clusters[1].connect_timeout: 1.5s: " + connectTimeoutWarning}
	if ws := Warnings(c); !slices.Equal(ws, want) {
		t.Errorf("Warnings =\n%q\nwant\n%q", ws, want)
	}

	// Zero is set too: the field is there, and just as ignored.
	c.Clusters[0].ConnectTimeout = durationpb.New(0)
	r := &breezev1.Runner{Listeners: []*breezev1.Listener{{Name: "a", Address: ":0", Proxy: validConfig()}, {Name: "b", Address: ":0", Proxy: c}}}
	want = []string{
		"listeners[1].proxy.clusters[0].connect_timeout: 0s: " + connectTimeoutWarning,
		"listeners[1].proxy.clusters[1].connect_timeout: 1.5s: " + connectTimeoutWarning,
	}
	if ws := RunnerWarnings(r); !slices.Equal(ws, want) {
		t.Errorf("RunnerWarnings =\n%q\nwant\n%q", ws, want)
	}
}
