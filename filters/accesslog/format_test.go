package accesslog

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/codecs"
	_ "github.com/breeze-mesh/breeze/codecs/dubbo"
	"github.com/breeze-mesh/breeze/filters/filter"
)

type route string

func (r route) RouteName() string     { return string(r) }
func (route) FilterConfig(string) any { return nil }

var start = time.Date(2026, 11, 30, 12, 34, 56, 789_000_000, time.UTC)

const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// answered is a Dubbo request that got its upstream's response.
func answered() *filter.Stream {
	s := &filter.Stream{
		Request: codecs.Message{Type: codecs.Request, ID: 42, Metadata: codecs.Metadata{
			{Key: "interface", Value: "org.apache.dubbo.samples.Greeter"},
			{Key: "method", Value: "sayHello"},
			{Key: "version", Value: "1.0.0"},
			{Key: "traceparent", Value: traceparent},
			{Key: "tenant", Value: "blue"},
		}},
		Route:    route("greeter-v1"),
		Cluster:  "outbound|20880||greeter.demo.svc.cluster.local",
		Upstream: "10.0.0.7:20880",
		Attempts: 2,
		Start:    start,
		End:      start.Add(12*time.Millisecond + 900*time.Microsecond),
		BytesIn:  321,
		BytesOut: 123,
		Outcome:  filter.Outcome{Responded: true, Status: codecs.StatusOK, Code: 20},
		Peer:     &filter.Peer{Addr: netip.MustParseAddrPort("10.1.2.3:45678")},
	}
	return s
}

var dubboEnv = func() *env {
	e := &env{protocol: "dubbo", serviceKey: "interface", methodKey: "method"}
	e.replies, _ = codecs.Instance("dubbo").(codecs.ReplyCoder)
	return e
}()

func text(t *testing.T, f string, s *filter.Stream) string {
	t.Helper()
	p, err := parseFormat(f)
	if err != nil {
		t.Fatalf("parse %q: %v", f, err)
	}
	return string(p.appendText(nil, s, dubboEnv))
}

// Each operator writes its value, Envoy's way.
func TestOperators(t *testing.T) {
	for _, tc := range []struct{ format, want string }{
		{"%START_TIME%", "2026-11-30T12:34:56.789Z"},
		{"%DURATION%", "12"},
		{"%RESPONSE_CODE%", "20"},
		{"%GENERIC_RESPONSE_CODE%", "20"},
		{"%RESPONSE_FLAGS%", "-"},
		{"%RESPONSE_CODE_DETAILS%", "via_upstream"},
		{"%UPSTREAM_HOST%", "10.0.0.7:20880"},
		{"%UPSTREAM_CLUSTER%", "outbound|20880||greeter.demo.svc.cluster.local"},
		{"%ROUTE_NAME%", "greeter-v1"},
		{"%BYTES_RECEIVED%", "321"},
		{"%BYTES_SENT%", "123"},
		{"%DOWNSTREAM_REMOTE_ADDRESS%", "10.1.2.3:45678"},
		{"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "10.1.2.3"},
		{"%UPSTREAM_REQUEST_ATTEMPT_COUNT%", "2"},
		{"%PROTOCOL%", "dubbo"},
		{"%SERVICE%", "org.apache.dubbo.samples.Greeter"},
		{"%HOST%", "org.apache.dubbo.samples.Greeter"},
		{"%PATH%", "org.apache.dubbo.samples.Greeter"},
		{"%METHOD%", "sayHello"},
		{"%VERSION%", "1.0.0"},
		{"%REQUEST_ID%", "42"},
		{"%TRACE_ID%", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"%REQUEST_PROPERTY(tenant)%", "blue"},
		{"%REQ(tenant)%", "blue"},
		{"%REQUEST_PROPERTY(tenant):2%", "bl"},
		{"%REQUEST_PROPERTY(absent)%", "-"},
		{"100%% [%METHOD%]", "100% [sayHello]"},
	} {
		if got := text(t, tc.format, answered()); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.format, got, tc.want)
		}
	}
}

// The default format, on a request that was answered, and on one that
// got no route: every field where Envoy's would be.
func TestDefaultFormat(t *testing.T) {
	got := text(t, DefaultFormat, answered())
	want := `[2026-11-30T12:34:56.789Z] "sayHello org.apache.dubbo.samples.Greeter dubbo" 20 - 321 123 12 "10.1.2.3:45678" "42" "4bf92f3577b34da6a3ce929d0e0e4736" "10.0.0.7:20880" outbound|20880||greeter.demo.svc.cluster.local greeter-v1` + "\n"
	if got != want {
		t.Errorf("answered:\n got %q\nwant %q", got, want)
	}
	s := &filter.Stream{
		Request: codecs.Message{Type: codecs.Request, ID: 7},
		Start:   start, End: start,
		Outcome: filter.Outcome{LocalReply: codecs.ErrNoRoute, Detail: "no route matched", Flags: filter.NoRoute},
	}
	got = text(t, DefaultFormat, s)
	want = `[2026-11-30T12:34:56.789Z] "- - dubbo" 60 NR 0 0 0 "-" "7" "-" "-" - -` + "\n"
	if got != want {
		t.Errorf("no route:\n got %q\nwant %q", got, want)
	}
	if d := text(t, "%RESPONSE_CODE_DETAILS%", s); d != "no_route_matched" {
		t.Errorf("details of a local reply: got %q, want no_route_matched", d)
	}
}

// %RESPONSE_CODE% of each way a request ends without a response of its own.
func TestResponseCodeWithoutResponse(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  codecs.MessageType
		o    filter.Outcome
		want string
	}{
		{"timeout reply", codecs.Request, filter.Outcome{LocalReply: codecs.ErrTimeout, Flags: filter.UpstreamRequestTimeout}, "31"},
		{"overloaded reply", codecs.Request, filter.Outcome{LocalReply: codecs.ErrOverloaded, Flags: filter.UpstreamOverflow}, "100"},
		{"oneway sent", codecs.Oneway, filter.Outcome{Sent: true}, "0"},
		{"oneway dropped", codecs.Oneway, filter.Outcome{LocalReply: codecs.ErrNoRoute, Flags: filter.NoRoute}, "0"},
		{"client gone", codecs.Request, filter.ClientGone, "0"},
	} {
		s := &filter.Stream{Request: codecs.Message{Type: tc.typ}, Outcome: tc.o}
		if got := text(t, "%RESPONSE_CODE% %RESPONSE_FLAGS%", s); got != tc.want+" "+tc.o.Flags.String() {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want+" "+tc.o.Flags.String())
		}
	}
	// A codec that does not say its replies' status: no value.
	s := &filter.Stream{Request: codecs.Message{Type: codecs.Request}, Outcome: filter.Outcome{LocalReply: codecs.ErrTimeout}}
	p, _ := parseFormat("%RESPONSE_CODE%")
	if got := string(p.appendText(nil, s, &env{})); got != "-" {
		t.Errorf("local reply of a codec without ReplyCoder: got %q, want -", got)
	}
}

func TestResponseFlags(t *testing.T) {
	s := answered()
	s.Outcome.Flags = filter.DelayInjected | filter.FaultInjected
	if got := text(t, "%RESPONSE_FLAGS%", s); got != "DI,FI" {
		t.Errorf("got %q, want DI,FI (as Flag.String: %s)", got, s.Outcome.Flags)
	}
	if len(flagNames) != 13 || flagNames[0] != "NR" || flagNames[12] != "IE" {
		t.Errorf("flag names read from filter.Flag: %v", flagNames)
	}
}

func TestTraceID(t *testing.T) {
	for _, tc := range []struct{ v, want string }{
		{traceparent, "4bf92f3577b34da6a3ce929d0e0e4736"},
		{traceparent + "-future", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"", ""},
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", ""}, // upper case
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""}, // zero id
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ""}, // version ff
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", ""},
		{"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ""},
	} {
		if got := TraceID(tc.v); got != tc.want {
			t.Errorf("TraceID(%q) = %q, want %q", tc.v, got, tc.want)
		}
	}
}

// A client's value cannot start a line of its own, nor break the JSON.
func TestValuesEscaped(t *testing.T) {
	s := answered()
	s.Request.Metadata = append(s.Request.Metadata, codecs.KV{Key: "evil", Value: "a\nb\"c\\d\xff"})
	if got := text(t, "%REQ(evil)%", s); got != `a\x0ab"c\d`+"\xff" {
		t.Errorf("text: got %q", got)
	}
	jf, err := parseJSONFormat(map[string]string{"evil": "%REQ(evil)%", "mixed": "x %REQ(evil)%"})
	if err != nil {
		t.Fatal(err)
	}
	line := jf.appendJSON(nil, s, dubboEnv)
	var got map[string]any
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatalf("line %q is not JSON: %v", line, err)
	}
	if got["evil"] != "a\nb\"c\\d\uFFFD" || got["mixed"] != `x a\x0ab"c\d`+"\uFFFD" {
		t.Errorf("parsed back: %q", got)
	}
}

// JSON lines: typed numbers for a numeric operator alone, null for no
// value, strings otherwise, keys sorted, one object per line.
func TestJSONFormat(t *testing.T) {
	jf, err := parseJSONFormat(map[string]string{
		"start_time": "%START_TIME%", "duration": "%DURATION%", "code": "%RESPONSE_CODE%",
		"flags": "%RESPONSE_FLAGS%", "method": "%METHOD%", "route": "%ROUTE_NAME%",
		"rpc": "%SERVICE%/%METHOD%", "absent": "%REQ(absent)%", "id": "%REQUEST_ID%",
		"bytes_in": "%BYTES_RECEIVED%", "trace_id": "%TRACE_ID%", "short": "%DURATION%:1",
	})
	if err != nil {
		t.Fatal(err)
	}
	s := answered()
	s.Route = nil
	line := string(jf.appendJSON(nil, s, dubboEnv))
	want := `{"absent":null,"bytes_in":321,"code":20,"duration":12,"flags":"-","id":42,"method":"sayHello",` +
		`"route":null,"rpc":"org.apache.dubbo.samples.Greeter/sayHello","short":"12:1","start_time":"2026-11-30T12:34:56.789Z",` +
		`"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}` + "\n"
	if line != want {
		t.Errorf("got  %s\nwant %s", line, want)
	}
}

// A bad format is an error that says where and what instead.
func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ format, want string }{
		{"%DURATON%", "at offset 0: %DURATON%: unknown operator (operators: BYTES_RECEIVED, "},
		{"x %METADATA(tenant)%", "at offset 2: %METADATA%: Envoy's %METADATA% reads dynamic metadata, which Breeze has none of: a request's key is %REQUEST_PROPERTY(key)%"},
		{"%REQUEST_PROPERTY%", "%REQUEST_PROPERTY%: name the request's key: %REQUEST_PROPERTY(key)%"},
		{"%DURATION(x)%", "%DURATION(x)%: DURATION takes no argument"},
		{"%DURATION", "%DURATION: no closing %"},
		{"50% off", "at offset 2: a % starts no operator: write %% for a percent sign"},
		{"%REQ(a:3%", "%REQ(: no closing parenthesis"},
		{"%REQ(a):x%", "%REQ: the length after ':' must be a positive number"},
	} {
		_, err := parseFormat(tc.format)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got error %v, want one containing %q", tc.format, err, tc.want)
		}
	}
}

// Formatting alone, into a reused buffer: no allocation.
func BenchmarkFormat(b *testing.B) {
	text, _ := parseFormat(DefaultFormat)
	js, _ := parseJSONFormat(map[string]string{
		"start_time": "%START_TIME%", "duration": "%DURATION%", "code": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%",
		"service": "%SERVICE%", "method": "%METHOD%", "upstream": "%UPSTREAM_HOST%", "trace_id": "%TRACE_ID%",
		"downstream": "%DOWNSTREAM_REMOTE_ADDRESS%", "bytes_sent": "%BYTES_SENT%"})
	s := answered()
	buf := make([]byte, 0, 1024)
	b.Run("default", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = text.appendText(buf[:0], s, dubboEnv)
		}
	})
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = js.appendJSON(buf[:0], s, dubboEnv)
		}
	})
}
