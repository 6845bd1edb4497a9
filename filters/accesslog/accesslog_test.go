package accesslog

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/internal/fault"
	"github.com/breeze-mesh/breeze/filters/metrics"
	"github.com/breeze-mesh/breeze/internal/testwait"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// eventually waits for cond, failing the test after a guard.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, what, 10*time.Second, func() (bool, string) { return cond(), "not yet" })
}

func pct(v float64) *float64 { return &v }

// Each condition of the filter, alone, on requests that end each way.
func TestFilterConditions(t *testing.T) {
	ok := answered()
	appErr := answered()
	appErr.Outcome.Status = codecs.StatusAppError
	slow := answered()
	slow.End = slow.Start.Add(2 * time.Second)
	noRoute := &filter.Stream{Request: codecs.Message{Type: codecs.Request}, Start: start, End: start,
		Outcome: filter.Outcome{LocalReply: codecs.ErrNoRoute, Flags: filter.NoRoute}}
	timeout := &filter.Stream{Request: codecs.Message{Type: codecs.Request}, Start: start, End: start.Add(time.Second),
		Outcome: filter.Outcome{LocalReply: codecs.ErrTimeout, Flags: filter.UpstreamRequestTimeout}}
	delayed := answered()
	delayed.Outcome.Flags = filter.DelayInjected
	oneway := &filter.Stream{Request: codecs.Message{Type: codecs.Oneway}, Outcome: filter.Outcome{Sent: true}}
	all := map[string]*filter.Stream{"ok": ok, "app_error": appErr, "slow": slow, "no_route": noRoute,
		"timeout": timeout, "delayed": delayed, "oneway": oneway}

	for _, tc := range []struct {
		name string
		cfg  *breezev1.AccessLogFilter
		want string // the requests logged, sorted
	}{
		{"none", nil, "app_error delayed no_route ok oneway slow timeout"},
		{"errors_only", &breezev1.AccessLogFilter{ErrorsOnly: true}, "app_error delayed no_route timeout"},
		{"status_codes", &breezev1.AccessLogFilter{StatusCodes: []uint32{31, 60}}, "no_route timeout"},
		{"status 0 (no response)", &breezev1.AccessLogFilter{StatusCodes: []uint32{0}}, "oneway"},
		{"min_duration", &breezev1.AccessLogFilter{MinDuration: durationpb.New(time.Second)}, "slow timeout"},
		{"any flag", &breezev1.AccessLogFilter{ResponseFlagFilter: &breezev1.ResponseFlagFilter{}}, "delayed no_route timeout"},
		{"flags", &breezev1.AccessLogFilter{ResponseFlagFilter: &breezev1.ResponseFlagFilter{Flags: []string{"UT", "DI"}}}, "delayed timeout"},
		{"all of them", &breezev1.AccessLogFilter{ErrorsOnly: true, MinDuration: durationpb.New(time.Second)}, "timeout"},
		{"sample 0", &breezev1.AccessLogFilter{SamplePercentage: pct(0)}, ""},
		{"sample 100", &breezev1.AccessLogFilter{SamplePercentage: pct(100)}, "app_error delayed no_route ok oneway slow timeout"},
	} {
		c := newCondition(tc.cfg)
		var got []string
		for _, name := range []string{"app_error", "delayed", "no_route", "ok", "oneway", "slow", "timeout"} {
			if c.pass(all[name], dubboEnv, func(uint64) uint64 { t.Fatal("drew a sample"); return 0 }) {
				got = append(got, name)
			}
		}
		if g := strings.Join(got, " "); g != tc.want {
			t.Errorf("%s: logged %q, want %q", tc.name, g, tc.want)
		}
	}
}

// sample_percentage draws once per request that passes the rest, and
// logs the draws below its share (in millionths).
func TestSampling(t *testing.T) {
	c := newCondition(&breezev1.AccessLogFilter{SamplePercentage: pct(12.5), ErrorsOnly: true})
	var draws []uint64
	next := uint64(0)
	rnd := func(n uint64) uint64 {
		if n != million {
			t.Fatalf("drew in [0, %d), want [0, %d)", n, million)
		}
		draws = append(draws, next)
		return next
	}
	ok, failed := answered(), &filter.Stream{Outcome: filter.Outcome{Flags: filter.NoRoute}}
	if c.pass(ok, dubboEnv, rnd) || len(draws) != 0 {
		t.Fatalf("a request the other conditions refuse was drawn for (%d draws)", len(draws))
	}
	for _, tc := range []struct {
		draw uint64
		want bool
	}{{0, true}, {124_999, true}, {125_000, false}, {999_999, false}} {
		next = tc.draw
		if got := c.pass(failed, dubboEnv, rnd); got != tc.want {
			t.Errorf("draw %d of 12.5%%: logged %v, want %v", tc.draw, got, tc.want)
		}
	}
}

// Validate names the field and the value of each mistake.
func TestValidate(t *testing.T) {
	bad := &breezev1.AccessLog{
		Path: "logs/access.log",
		LogFormat: &breezev1.AccessLogFormat{TextFormat: "%DURATON%", JsonFormat: map[string]string{
			"ok": "%DURATION%", "bad": "%REQ%", "": "x"}},
		Filter: &breezev1.AccessLogFilter{
			MinDuration:        &durationpb.Duration{Seconds: -1},
			ResponseFlagFilter: &breezev1.ResponseFlagFilter{Flags: []string{"UT", "XX"}},
			SamplePercentage:   pct(101),
		},
	}
	err := Validate(bad)
	for _, want := range []string{
		`path: "logs/access.log": must be absolute`,
		`log_format: set one of text_format and json_format, not both`,
		`log_format.text_format: "%DURATON%": at offset 0: %DURATON%: unknown operator`,
		`log_format.json_format[bad]: "%REQ%": at offset 0: %REQ%: name the request's key: %REQ(key)%`,
		`log_format.json_format: "": a key must not be empty`,
		`filter.min_duration: -1s: must not be negative`,
		`filter.response_flag_filter.flags[1]: "XX": not a response flag: want one of NR, UH, UF, UO, URX, UT, UC, DC, DI, FI, RL, UAEX, IE`,
		`filter.sample_percentage: 101: must be 0–100`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing error %q in:\n%v", want, err)
		}
	}
	for _, p := range []string{"", "/var/log/", "/a\x00b"} {
		if Validate(&breezev1.AccessLog{Path: p}) == nil {
			t.Errorf("path %q accepted", p)
		}
	}
	for _, p := range []string{Stdout, Stderr, "/var/log/breeze/access.log"} {
		if err := Validate(&breezev1.AccessLog{Path: p}); err != nil {
			t.Errorf("path %q: %v", p, err)
		}
	}
}

func dropped(proxy, reason string) float64 {
	return testutil.ToFloat64(metrics.AccessLogDropped.WithLabelValues(proxy, reason))
}

// A sink nobody reads (a pipe whose buffer is full and whose reader is
// away) never holds a request: the writer is stuck in its write, the
// bounded queue fills, further lines are dropped and counted, and every
// OnDone returns at once. Once the reader is back every line that was not
// dropped arrives, whole and in order.
func TestBlockedSinkDropsAndNeverBlocks(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	// Fill the pipe: nobody reads it, so the writer's first write blocks.
	fd := int(w.Fd())
	if err := syscall.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	prefill := 0
	for chunk := []byte(strings.Repeat("p\n", 512)); ; {
		n, err := syscall.Write(fd, chunk)
		if n > 0 {
			prefill += n
		}
		if err == syscall.EAGAIN {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	path := fmt.Sprintf("/proc/self/fd/%d", fd)
	const proxy = "blocked_sink"
	// The counters are the process's: count from here (go test -count).
	lostBefore, errBefore := dropped(proxy, "queue_full"), dropped(proxy, "write_error")
	f, err := New([]*breezev1.AccessLog{{Path: path, LogFormat: &breezev1.AccessLogFormat{TextFormat: "%REQUEST_ID% %DURATION%"}}},
		Options{Proxy: proxy, Codec: "dubbo", QueueBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	// 4096 bytes hold 64 lines (queueBytes/64); the writer may hold one
	// more batch of as many, stuck in its write.
	const sent, bound = 2000, 2 * 64
	for i := 1; i <= sent; i++ {
		s := answered()
		s.Request.ID = uint64(i)
		f.OnDone(s)
	}
	lost := int(dropped(proxy, "queue_full") - lostBefore)
	kept := sent - lost
	t.Logf("%d lines to a full pipe nobody reads: every OnDone returned; %d dropped (queue_full), %d kept", sent, lost, kept)
	if kept > bound || kept < 1 {
		t.Fatalf("%d lines kept, want 1–%d (the queue and the batch in the stuck write)", kept, bound)
	}

	// The reader comes back: the prefill, then every line kept, in order, whole.
	sc := bufio.NewScanner(r)
	got, last := 0, uint64(0)
	for got < kept && sc.Scan() {
		if sc.Text() == "p" {
			continue
		}
		var id, ms uint64
		if _, err := fmt.Sscanf(sc.Text(), "%d %d", &id, &ms); err != nil || id <= last || ms != 12 {
			t.Fatalf("line %d: %q (after id %d): not a whole line in order", got, sc.Text(), last)
		}
		last = id
		got++
	}
	if got != kept {
		t.Fatalf("read %d lines, want the %d not dropped", got, kept)
	}
	f.Close()
	if d := dropped(proxy, "write_error") - errBefore; d != 0 {
		t.Errorf("write_error drops: %v, want 0", d)
	}
}

// logrotate renames the file away: the writer notices and writes to a
// new file at the path; the old one keeps what it had.
func TestReopensRotatedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	f, err := New([]*breezev1.AccessLog{{Path: path, LogFormat: &breezev1.AccessLogFormat{TextFormat: "%REQUEST_ID%"}}},
		Options{Proxy: "rotate", Codec: "dubbo"})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	read := func(p string) string { b, _ := os.ReadFile(p); return string(b) }
	s := answered()
	s.Request.ID = 1
	f.OnDone(s)
	eventually(t, "line 1 in the file", func() bool { return read(path) == "1\n" })
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	s.Request.ID = 2
	f.OnDone(s)
	eventually(t, "line 2 in a new file at the path", func() bool { return read(path) == "2\n" })
	if got := read(path + ".1"); got != "1\n" {
		t.Errorf("rotated file holds %q, want line 1 alone", got)
	}
}

// A panic in the writer (a bug) is recovered and counted: the lines of
// that batch are lost and counted, the next are written.
func TestWriterPanicRecovered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "panic.log")
	var once sync.Once
	defer fault.Set(func(where, key string) {
		if key == path {
			once.Do(func() { panic("injected") })
		}
	})()
	panics := testutil.ToFloat64(metrics.Panics.WithLabelValues(panicWhere))
	lostBefore := dropped("panicky", "write_error")
	f, err := New([]*breezev1.AccessLog{{Path: path, LogFormat: &breezev1.AccessLogFormat{TextFormat: "%REQUEST_ID%"}}},
		Options{Proxy: "panicky", Codec: "dubbo"})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := answered()
	s.Request.ID = 1
	f.OnDone(s)
	eventually(t, "the line of the panicking batch counted lost", func() bool { return dropped("panicky", "write_error")-lostBefore == 1 })
	s.Request.ID = 2
	f.OnDone(s)
	eventually(t, "line 2 written", func() bool { b, _ := os.ReadFile(path); return string(b) == "2\n" })
	if got := testutil.ToFloat64(metrics.Panics.WithLabelValues(panicWhere)) - panics; got != 1 {
		t.Errorf("breeze_panics_total{where=%q} rose by %v, want 1", panicWhere, got)
	}
}

// Proxies naming one path share its writer; the last to close closes it.
func TestSinkSharedByPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shared.log")
	cfg := []*breezev1.AccessLog{{Path: path, LogFormat: &breezev1.AccessLogFormat{TextFormat: "%PROTOCOL%"}}}
	a, err := New(cfg, Options{Proxy: "a", Codec: "dubbo"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(cfg, Options{Proxy: "b", Codec: "thrift-less"})
	if err != nil {
		t.Fatal(err)
	}
	if a.logs[0].sink != b.logs[0].sink {
		t.Fatal("two proxies naming one path got two writers")
	}
	a.OnDone(answered())
	a.Close()
	b.OnDone(answered())
	b.Close()
	got, _ := os.ReadFile(path)
	if string(got) != "dubbo\nthrift-less\n" {
		t.Errorf("file holds %q, want each proxy's line", got)
	}
	sinksMu.Lock()
	_, open := sinks[path]
	sinksMu.Unlock()
	if open {
		t.Error("the sink stayed open after its last proxy closed")
	}
}

// A file that cannot be opened rejects the config, naming it.
func TestUnopenableFile(t *testing.T) {
	_, err := New([]*breezev1.AccessLog{{Path: Stdout}, {Path: "/proc/no/such/dir/access.log"}}, Options{Proxy: "x", Codec: "dubbo"})
	if err == nil || !strings.HasPrefix(err.Error(), `access_log[1].path: "/proc/no/such/dir/access.log": open /proc/no/such/dir/access.log: `) {
		t.Fatalf("got %v", err)
	}
	sinksMu.Lock()
	_, open := sinks[Stdout]
	sinksMu.Unlock()
	if open {
		t.Error("the first log's sink stayed open after the config failed")
	}
}

// Formatting a line and queueing it allocates nothing.
func BenchmarkOnDone(b *testing.B) {
	for _, tc := range []struct {
		name string
		f    *breezev1.AccessLogFormat
	}{
		{"default", nil},
		{"json", &breezev1.AccessLogFormat{JsonFormat: map[string]string{
			"start_time": "%START_TIME%", "duration": "%DURATION%", "code": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%",
			"service": "%SERVICE%", "method": "%METHOD%", "upstream": "%UPSTREAM_HOST%", "trace_id": "%TRACE_ID%",
			"downstream": "%DOWNSTREAM_REMOTE_ADDRESS%", "bytes_sent": "%BYTES_SENT%"}}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			f, err := New([]*breezev1.AccessLog{{Path: "/dev/null", LogFormat: tc.f}}, Options{Proxy: "bench", Codec: "dubbo"})
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			s := answered()
			b.ReportAllocs()
			for b.Loop() {
				f.OnDone(s)
			}
		})
	}
}
