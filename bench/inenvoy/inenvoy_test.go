package inenvoy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/breeze-mesh/breeze/bench/internal/wire"
	// The codecs, which the config's validation looks up.
	_ "github.com/breeze-mesh/breeze/builtin"
	"github.com/breeze-mesh/breeze/config"
)

// The harness's traffic: make bench sets it (scripts/bench.sh); the test's
// own run is brief, a check that the harness measures real requests.
var (
	requests = flag.Int("harness.requests", 400, "requests measured per protocol")
	warmup   = flag.Int("harness.warmup", 100, "requests before the measurement")
	conns    = flag.Int("harness.conns", 8, "downstream connections")
	inFlight = flag.Int("harness.inflight", 4, "requests in flight per connection")
	payload  = flag.Int("harness.payload", 1024, "bytes of argument per request")
	protos   = flag.String("harness.protos", "dubbo,thrift", "protocols to run")
	jsonOut  = flag.String("harness.json", "", "append each protocol's row to this file, as breeze-load -json does (make bench's table)")
	group    = flag.String("harness.group", "", "the table the row goes in (breeze-load -group)")
)

// Label is the harness's row in make bench's table.
const Label = "breeze in-Envoy harness (Go side)"

var configs = map[string]string{"dubbo": "../configs/breeze.yaml", "thrift": "../configs/breeze-thrift.yaml"}

// TestHarness builds breeze.so and the harness, and runs the bench's
// request mix through the library's exported entry points: every request
// must be answered, each with the echo's response intact but for its own
// id (testdata/harness.c checks both and exits otherwise), and each must have gone
// upstream once. It prints the harness's figures, which say something
// only on a quiet machine (make bench runs it so).
func TestHarness(t *testing.T) {
	dir := t.TempDir()
	harness := filepath.Join(dir, "harness")
	if out, err := exec.Command("gcc", "-O2", "-Wall", "-rdynamic", "-o", harness, "testdata/harness.c", "-ldl", "-lpthread").CombinedOutput(); err != nil {
		t.Fatalf("building the harness: %v\n%s", err, out)
	}
	so := filepath.Join(dir, "breeze.so")
	build := exec.Command("go", "build", "-buildmode=c-shared", "-o", so, "./plugin")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building breeze.so: %v\n%s", err, out)
	}
	for _, name := range strings.Split(*protos, ",") {
		t.Run(name, func(t *testing.T) {
			args := inputs(t, dir, name)
			args = append(args, strconv.Itoa(*conns), strconv.Itoa(*inFlight), strconv.Itoa(*warmup), strconv.Itoa(*requests))
			cmd := exec.Command(harness, append([]string{so}, args...)...)
			cmd.Env = append(os.Environ(), "GODEBUG=cgocheck=0")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("harness: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
			}
			res := result(t, out)
			t.Logf("breeze in-Envoy harness (Go side), %s: %s", name, res["line"])
			if res["requests"] != strconv.Itoa(*requests) {
				t.Errorf("the harness reports %s requests measured, want %d", res["requests"], *requests)
			}
			if want := strconv.Itoa(*requests + *warmup); res["upstream_requests"] != want {
				t.Errorf("%s requests reached the upstream, want %s (one per request)", res["upstream_requests"], want)
			}
			if *jsonOut != "" {
				appendRow(t, name, res)
			}
		})
	}
}

// inputs writes the config, the request frames and the echo's response
// of protocol name, and returns the harness's arguments for them.
func inputs(t *testing.T, dir, name string) []string {
	t.Helper()
	p, err := wire.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	reqs, err := p.Requests(wire.MixRoutes, *payload)
	if err != nil {
		t.Fatal(err)
	}
	var frames []byte
	for _, r := range reqs {
		frames = append(frames, r.Frame...)
	}
	resp, err := p.Echo(nil, reqs[0].Frame)
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(configs[name])
	if err != nil {
		t.Fatal(err)
	}
	runner, err := config.ParseRunner(configs[name], text)
	if err != nil {
		t.Fatal(err)
	}
	a, err := config.ToAny(runner.GetListeners()[0].GetProxy())
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := proto.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{name + ".any": cfg, name + ".requests": frames, name + ".response": resp}
	for f, b := range files {
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return []string{filepath.Join(dir, name+".any"), name, filepath.Join(dir, name+".requests"), filepath.Join(dir, name+".response")}
}

// result parses the harness's "result k=v ..." line (and requires "done").
func result(t *testing.T, out []byte) map[string]string {
	t.Helper()
	res := map[string]string{}
	done := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "result "); ok {
			res["line"] = rest
			for _, kv := range strings.Fields(rest) {
				if k, v, ok := strings.Cut(kv, "="); ok {
					res[k] = v
				}
			}
		}
		done = done || line == "done"
	}
	if !done || res["line"] == "" {
		t.Fatalf("the harness did not finish: %s", out)
	}
	return res
}

// appendRow writes the harness's figures as a row of make bench's table:
// CPU per request only. It has no req/s nor latency to show (no sockets,
// one thread: they would compare with nothing), and they stay 0.
func appendRow(t *testing.T, proto string, res map[string]string) {
	t.Helper()
	cpuNs, err := strconv.ParseFloat(res["cpu_ns_per_req"], 64)
	if err != nil {
		t.Fatalf("cpu_ns_per_req %q: %v", res["cpu_ns_per_req"], err)
	}
	allocs, _ := strconv.ParseFloat(res["go_allocs_per_req"], 64)
	row := map[string]any{
		"group": *group, "kind": "load", "label": Label, "proto": proto,
		"conns": *conns, "in_flight": *inFlight, "payload": *payload,
		"responses": *requests, "ok": *requests,
		// ns per request = 1e-6 s per 1,000 requests.
		"cpu_s_per_1k":      cpuNs * 1e-6,
		"go_allocs_per_req": allocs,
	}
	writeRow(t, row)
}

// writeRow appends row to -harness.json.
func writeRow(t *testing.T, row map[string]any) {
	t.Helper()
	b, err := json.Marshal(row)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(*jsonOut, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(append(b, '\n')); err != nil {
		t.Fatal(err)
	}
}

// CxxLabel is the row of the C++ half's price in make bench's table.
const CxxLabel = "C++ half of the Go filter (priced, testdata/cxxhalf.cc)"

// TestCxxHalf builds testdata/cxxhalf.cc, the model of what Envoy's C++ side
// of the Go network filter does per routed request that tcp_proxy does not
// (slice arrays, copies into new buffers, dispatcher posts), and runs it at
// the bench's request and response sizes, at the table's requests in
// flight and at one. The program fails unless every byte written reached
// the other side; the figures say something only on a quiet machine.
func TestCxxHalf(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "cxxhalf")
	if out, err := exec.Command("g++", "-O2", "-Wall", "-std=c++17", "-o", bin, "testdata/cxxhalf.cc", "-lpthread").CombinedOutput(); err != nil {
		t.Fatalf("building cxxhalf: %v\n%s", err, out)
	}
	for _, name := range strings.Split(*protos, ",") {
		t.Run(name, func(t *testing.T) {
			p, err := wire.Lookup(name)
			if err != nil {
				t.Fatal(err)
			}
			reqs, err := p.Requests(wire.MixRoutes, *payload)
			if err != nil {
				t.Fatal(err)
			}
			reqBytes := 0
			for _, r := range reqs {
				reqBytes += len(r.Frame)
			}
			reqBytes /= len(reqs)
			resp, err := p.Echo(nil, reqs[0].Frame)
			if err != nil {
				t.Fatal(err)
			}
			for _, inFlightNow := range []int{*conns * *inFlight, 1} {
				out, err := exec.Command(bin, strconv.Itoa(inFlightNow), strconv.Itoa(reqBytes), strconv.Itoa(len(resp)), strconv.Itoa(*requests)).CombinedOutput()
				if err != nil {
					t.Fatalf("cxxhalf: %v\n%s", err, out)
				}
				res := result(t, out)
				t.Logf("C++ half of the Go filter, %s, %d-byte requests, %d-byte responses: %s", name, reqBytes, len(resp), res["line"])
				if res["requests"] != strconv.Itoa(*requests) {
					t.Errorf("cxxhalf reports %s requests, want %d", res["requests"], *requests)
				}
				if *jsonOut != "" && inFlightNow > 1 {
					appendCxxRow(t, name, inFlightNow, res)
				}
			}
		})
	}
}

// appendCxxRow writes the price of the C++ half as a row of make bench's
// table (CPU per request only, like the harness's).
func appendCxxRow(t *testing.T, proto string, inFlightNow int, res map[string]string) {
	t.Helper()
	cpuNs, err := strconv.ParseFloat(res["cpu_ns_per_req"], 64)
	if err != nil {
		t.Fatalf("cpu_ns_per_req %q: %v", res["cpu_ns_per_req"], err)
	}
	row := map[string]any{
		"group": *group, "kind": "load", "label": CxxLabel, "proto": proto,
		"conns": *conns, "in_flight": *inFlight, "payload": *payload,
		"responses": *requests, "ok": *requests,
		"cpu_s_per_1k": cpuNs * 1e-6,
	}
	writeRow(t, row)
}
