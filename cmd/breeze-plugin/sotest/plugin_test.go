// Package sotest tests breeze.so as Envoy loads it. It is not in
// cmd/breeze-plugin: a test binary of that package would link Envoy's
// api_impl, whose init calls into Envoy.
package sotest

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/codecs/dubbo"
	"github.com/breeze-mesh/breeze/config"
	"github.com/breeze-mesh/breeze/internal/release"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// The version the test stamps into breeze.so, as the Makefile does.
const (
	stampVersion = "github.com/breeze-mesh/breeze/internal/buildinfo.version=v9.9.9-sotest"
	stampCommit  = "github.com/breeze-mesh/breeze/internal/buildinfo.commit=0123456789abcdef0123456789abcdef01234567"
)

// TestSharedObjectThroughItsCExports builds breeze.so exactly as shipped,
// for every build target (one per Envoy Go API, internal/release), and
// loads each the way Envoy does (dlopen with RTLD_LAZY) from a small C
// program that implements Envoy's C API for Go network filters. That
// exercises what the Go host cannot: the library's init, its cgo exports
// and its calls back into C.
func TestSharedObjectThroughItsCExports(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "fakeenvoy")
	if out, err := exec.Command("gcc", "-rdynamic", "-o", fake, "testdata/fakeenvoy.c", "-ldl").CombinedOutput(); err != nil {
		t.Fatalf("building fakeenvoy: %v\n%s", err, out)
	}
	for _, r := range release.All {
		t.Run("Envoy "+r.Envoy, func(t *testing.T) {
			testSharedObject(t, r, fake, buildPlugin(t, r))
		})
	}
}

// The filter-state read path (internal/filterstate) against the shim's real
// C API calls, for every build target: testdata/fsprobe reads "peer", which
// the C side holds per connection, in OnNewConnection and OnData, sets a key
// with the shim's SetString and reads it back. Every string arrives intact,
// on each of many connections (the C side exits on a wrapper it does not
// know: the read passes the connection's own). GOGC=1 keeps the collector
// busy meanwhile.
func TestFilterStateThroughCExports(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "fakeenvoy")
	if out, err := exec.Command("gcc", "-rdynamic", "-o", fake, "testdata/fakeenvoy.c", "-ldl").CombinedOutput(); err != nil {
		t.Fatalf("building fakeenvoy: %v\n%s", err, out)
	}
	noConfig := filepath.Join(dir, "none.any")
	frame := filepath.Join(dir, "frame")
	os.WriteFile(noConfig, nil, 0o644)
	os.WriteFile(frame, []byte("x"), 0o644)
	const conns = 500
	for _, r := range release.All {
		t.Run("Envoy "+r.Envoy, func(t *testing.T) {
			so := buildSharedObject(t, r, "./testdata/fsprobe", "fsprobe.so")
			lines := runFake(t, []string{"FAKEENVOY_CONNS=" + strconv.Itoa(conns), "GOGC=1"}, fake, so, noConfig, frame, frame)
			writes := field(lines, "write")
			if len(writes) != 2*conns {
				t.Fatalf("want %d writes (2 per connection), got %d: %v", 2*conns, len(writes), lines)
			}
			for i, w := range writes {
				b, err := hex.DecodeString(w)
				if err != nil {
					t.Fatal(err)
				}
				peer := "spiffe://fake/conn-" + strconv.Itoa(i/2)
				if want := peer + "|" + peer + "|set-" + peer; string(b) != want {
					t.Fatalf("connection %d wrote %q, want %q", i/2, b, want)
				}
			}
		})
	}
}

// buildPlugin builds breeze.so for target r, as `make plugin ENVOY=...`
// does: with r's go.mod, whatever GOFLAGS says.
func buildPlugin(t *testing.T, r release.Release) string {
	t.Helper()
	return buildSharedObject(t, r, "..", "breeze.so")
}

// buildSharedObject builds the c-shared library of pkg for target r.
func buildSharedObject(t *testing.T, r release.Release, pkg, name string) string {
	t.Helper()
	so := filepath.Join(t.TempDir(), name)
	modfile, err := filepath.Abs(filepath.Join("../../..", r.Modfile))
	if err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-modfile="+modfile, "-buildmode=c-shared", "-ldflags", "-X "+stampVersion+" -X "+stampCommit, "-o", so, pkg)
	build.Env = append(os.Environ(), "CGO_ENABLED=1", "GOFLAGS=-buildvcs=false")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building %s for %s: %v\n%s", name, r, err, out)
	}
	return so
}

func testSharedObject(t *testing.T, r release.Release, fake, so string) {
	dir := t.TempDir()
	cfg := &breezev1.ProxyConfig{
		StatPrefix: "so", Codec: "dubbo",
		RouteConfig: &breezev1.RouteConfiguration{Routes: []*breezev1.Route{{
			Match: &breezev1.RouteMatch{Metadata: []*breezev1.MetadataMatcher{{Key: "method", Match: &breezev1.MetadataMatcher_Exact{Exact: "NoSuchMethod"}}}},
			Route: &breezev1.RouteAction{ClusterSpecifier: &breezev1.RouteAction_Cluster{Cluster: "c"}},
		}}},
		Clusters: []*breezev1.Cluster{{Name: "c", Endpoints: []*breezev1.Endpoint{{Address: "127.0.0.1", Port: 1}}}},
	}
	// The form Istio carries: a TypedStruct.
	ts, err := config.ToTypedStruct(cfg)
	if err != nil {
		t.Fatal(err)
	}
	heartbeat := "../../../codecs/dubbo/testdata/real/heartbeat_request_from_client.bin"
	request := "../../../codecs/dubbo/testdata/real/request_greet_with_attachments.bin"
	garbage := filepath.Join(dir, "garbage.bin")
	os.WriteFile(garbage, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 0o644)

	t.Run("valid config", func(t *testing.T) {
		lines := runFake(t, nil, fake, so, writeAny(t, dir, ts), heartbeat, request, garbage)
		writes := field(lines, "write")
		if len(writes) != 2 {
			t.Fatalf("want 2 writes (heartbeat reply, no-route reply), got %v", lines)
		}
		hb := decode(t, heartbeat)
		if m := decodeHex(t, writes[0]); m.Type != codecs.HeartbeatReply || m.ID != hb.ID {
			t.Errorf("heartbeat reply: %+v, want id %d", m, hb.ID)
		}
		req := decode(t, request)
		if m := decodeHex(t, writes[1]); m.Type != codecs.Response || m.Status != codecs.StatusError || m.ID != req.ID {
			t.Errorf("no-route reply: %+v, want an error response with id %d", m, req.ID)
		}
		if c := field(lines, "close"); len(c) != 1 {
			t.Errorf("garbage should close the connection once: %v", lines)
		}
	})
	t.Run("rejected config refuses connections", func(t *testing.T) {
		bad := &anypb.Any{TypeUrl: "type.googleapis.com/breeze.v1.NoSuchType", Value: []byte{1, 2, 3}}
		lines := runFake(t, nil, fake, so, writeAny(t, dir, bad), heartbeat)
		if len(field(lines, "close")) != 1 || len(field(lines, "write")) != 0 {
			t.Fatalf("want the connection closed and nothing written, got %v", lines)
		}
		if !hasLog(lines, "4 ", "breeze.v1.NoSuchType") {
			t.Errorf("want an error in Envoy's log naming the rejected type, got %v", lines)
		}
	})
	// Once, when Envoy loads the library: which Breeze, for which Envoy,
	// in Envoy's log at info (spdlog level 2).
	t.Run("version in Envoy's log", func(t *testing.T) {
		lines := runFake(t, nil, fake, so, writeAny(t, dir, ts))
		want := "2 breeze plugin loaded version=v9.9.9-sotest commit=0123456789abcdef0123456789abcdef01234567 envoy_go_api=" + r.EnvoyGoAPI + " istio=" + r.Istio + " go=" + runtime.Version()
		var got []string
		for _, l := range field(lines, "log") {
			if strings.Contains(l, "breeze plugin loaded") {
				got = append(got, l)
			}
		}
		if len(got) != 1 || got[0] != want {
			t.Errorf("got %q\nwant [%q]", got, want)
		}
	})
	// Envoy's level decides what is written: at error (4), the info line
	// is not, the rejected config is.
	t.Run("Envoy's log level", func(t *testing.T) {
		bad := &anypb.Any{TypeUrl: "type.googleapis.com/breeze.v1.NoSuchType", Value: []byte{1, 2, 3}}
		lines := runFake(t, []string{"FAKEENVOY_LOG_LEVEL=4"}, fake, so, writeAny(t, dir, bad), heartbeat)
		if hasLog(lines, "", "breeze plugin loaded") || !hasLog(lines, "4 ", "breeze.v1.NoSuchType") {
			t.Errorf("at error: want only the error line, got %v", field(lines, "log"))
		}
	})
}

func writeAny(t *testing.T, dir string, a *anypb.Any) string {
	t.Helper()
	b, err := proto.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, strings.ReplaceAll(a.GetTypeUrl(), "/", "_")+".any")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// hasLog: a line of Envoy's log starts with prefix (its level) and
// contains s.
func hasLog(lines []string, prefix, s string) bool {
	for _, l := range field(lines, "log") {
		if strings.HasPrefix(l, prefix) && strings.Contains(l, s) {
			return true
		}
	}
	return false
}

func runFake(t *testing.T, env []string, fake string, args ...string) []string {
	t.Helper()
	cmd := exec.Command(fake, args...)
	cmd.Env = append(append(os.Environ(), "GODEBUG=cgocheck=0"), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("fakeenvoy: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) == 0 || lines[len(lines)-1] != "done" {
		t.Fatalf("fakeenvoy did not finish: %v\nstderr:\n%s", lines, stderr.String())
	}
	return lines
}

func field(lines []string, verb string) []string {
	var out []string
	for _, l := range lines {
		if v, ok := strings.CutPrefix(l, verb+" "); ok {
			out = append(out, v)
		}
	}
	return out
}

func decode(t *testing.T, path string) codecs.Message {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return decodeBytes(t, b)
}

func decodeHex(t *testing.T, h string) codecs.Message {
	t.Helper()
	b, err := hex.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	return decodeBytes(t, b)
}

func decodeBytes(t *testing.T, b []byte) codecs.Message {
	t.Helper()
	c, err := dubbo.New(codecs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var m codecs.Message
	n, err := c.Decode(b, &m)
	if err != nil || n != len(b) {
		t.Fatalf("decode %x: n=%d err=%v", b, n, err)
	}
	return m
}
