package tracing

import (
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/filter"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

const (
	clientTrace  = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientSpanID = "00f067aa0ba902b7"
	clientParent = "00-" + clientTrace + "-" + clientSpanID + "-01"
	clientState  = "vendor=opaque"
)

// transports are a request of each codec and transport, as real peers
// sent them (the codecs' testdata), with where a client puts its trace
// context ("" for a transport that cannot carry one).
var transports = []struct {
	name, codec, file, key string
}{
	{"dubbo", "dubbo", "../../codecs/dubbo/testdata/request.bin", TraceparentKey},
	{"thrift THeader", "thrift", "../../codecs/thrift/testdata/apache_header_binary_request.bin", TraceparentKey},
	{"thrift THeader compact", "thrift", "../../codecs/thrift/testdata/apache_header_compact_request.bin", TraceparentKey},
	{"kitex TTHeader", "thrift", "../../codecs/thrift/testdata/kitex_ttheader_binary_request.bin", KitexTraceparent},
	{"thrift framed", "thrift", "../../codecs/thrift/testdata/apache_framed_binary_request.bin", ""},
	{"kitex framed", "thrift", "../../codecs/thrift/testdata/kitex_framed_binary_request.bin", ""},
}

// TestPropagation: for each codec and transport, a request carrying a
// client's sampled trace context gets a server span that is the client
// span's child, an attempt gets a client span that is the server span's
// child, and the request sent upstream carries the client span's context
// under the key the client used (decoded back from the encoded frame).
// Transports without headers record a new root and send nothing.
func TestPropagation(t *testing.T) {
	for _, tc := range transports {
		t.Run(tc.name, func(t *testing.T) {
			p, exp := memoryPipeline(t)
			f := newFilter(t, tc.codec, &breezev1.Tracing{}, p)
			frame := readFile(t, tc.file)
			if tc.key != "" {
				state := strings.Replace(tc.key, "traceparent", "tracestate", 1)
				frame = withKeys(t, tc.codec, frame, codecs.KV{Key: tc.key, Value: clientParent}, codecs.KV{Key: state, Value: clientState})
			}
			m := decodeFrame(t, tc.codec, frame)
			s := &filter.Stream{Request: *m, Start: time.Now(), Upstream: "10.0.0.7:20880", Cluster: "provider"}
			if st := f.OnRequest(s); st != filter.Continue {
				t.Fatalf("OnRequest = %v", st)
			}
			w := s.AttemptWatcher
			if tc.key == "" && w != nil {
				t.Fatalf("a request without a trace context was traced at 0%%")
			}
			if tc.key == "" {
				// Headerless: nothing says the client sampled; at 100% it is traced as a new root.
				f = newFilter(t, tc.codec, &breezev1.Tracing{RandomSamplingPercentage: 100}, p)
				f.OnRequest(s)
				w = s.AttemptWatcher
			}
			if w == nil {
				t.Fatalf("the request was not traced")
			}
			w.StartAttempt(s, &s.Request)
			out := decodeFrame(t, tc.codec, encode(t, tc.codec, &s.Request))
			sentParent, sent := out.Metadata.Get(tc.key)
			if tc.key == "" {
				sentParent, sent = out.Metadata.Get(TraceparentKey)
			}
			w.EndAttempt(s, filter.AttemptEnd{Response: &codecs.Message{Type: codecs.Response, Code: 20}})
			s.End = time.Now()
			s.Outcome = filter.Outcome{Responded: true, Code: 20}
			f.OnDone(s)

			got := spans(t, p, exp)
			servers, clients := stubByKind(got, "server"), stubByKind(got, "client")
			if len(servers) != 1 || len(clients) != 1 {
				t.Fatalf("exported %d server and %d client spans, want 1 and 1", len(servers), len(clients))
			}
			srv, cli := servers[0], clients[0]
			if cli.Parent.SpanID() != srv.SpanContext.SpanID() || cli.SpanContext.TraceID() != srv.SpanContext.TraceID() {
				t.Errorf("client span's parent %s/%s, want the server span %s/%s", cli.Parent.TraceID(), cli.Parent.SpanID(), srv.SpanContext.TraceID(), srv.SpanContext.SpanID())
			}
			if tc.key == "" {
				if srv.Parent.IsValid() {
					t.Errorf("headerless request: server span has parent %s, want a new root", srv.Parent.SpanID())
				}
				if sent {
					t.Errorf("headerless request: traceparent %q sent upstream", sentParent)
				}
				if a := attr(srv, attrPropagation); a != "unsupported" {
					t.Errorf("headerless request: %s = %q, want unsupported", attrPropagation, a)
				}
				return
			}
			if srv.Parent.TraceID().String() != clientTrace || srv.Parent.SpanID().String() != clientSpanID || !srv.Parent.IsRemote() {
				t.Errorf("server span's parent %s/%s remote=%v, want the client's %s/%s", srv.Parent.TraceID(), srv.Parent.SpanID(), srv.Parent.IsRemote(), clientTrace, clientSpanID)
			}
			if ts := srv.SpanContext.TraceState().String(); ts != clientState {
				t.Errorf("server span's tracestate %q, want the client's %q", ts, clientState)
			}
			want := "00-" + clientTrace + "-" + cli.SpanContext.SpanID().String() + "-01"
			if sentParent != want {
				t.Errorf("upstream request's %s = %q (present %v), want the client span's %q", tc.key, sentParent, sent, want)
			}
			if st, _ := out.Metadata.Get(strings.Replace(tc.key, "traceparent", "tracestate", 1)); st != clientState {
				t.Errorf("upstream request's tracestate %q, want the client's %q passed through", st, clientState)
			}
		})
	}
}

// TestAttributes: names and attributes per the RPC conventions, status
// from the protocol's status.
func TestAttributes(t *testing.T) {
	p, exp := memoryPipeline(t)
	f := newFilter(t, "dubbo", &breezev1.Tracing{RandomSamplingPercentage: 100}, p)
	m := decodeFrame(t, "dubbo", readFile(t, "../../codecs/dubbo/testdata/request.bin"))
	service, method := codecs.Describe(codecs.Instance("dubbo"), m.Metadata)
	s := &filter.Stream{Request: *m, Start: time.Now(), Cluster: "provider"}
	f.OnRequest(s)
	s.Upstream = "10.0.0.7:20880"
	s.AttemptWatcher.StartAttempt(s, &s.Request)
	s.AttemptWatcher.EndAttempt(s, filter.AttemptEnd{Failure: "timeout", Flag: filter.UpstreamRequestTimeout})
	s.Upstream = "10.0.0.8:20880"
	s.AttemptWatcher.StartAttempt(s, &s.Request)
	s.AttemptWatcher.EndAttempt(s, filter.AttemptEnd{Response: &codecs.Message{Type: codecs.Response, Status: codecs.StatusAppError, Code: 20}})
	s.End = time.Now()
	s.Outcome = filter.Outcome{Responded: true, Status: codecs.StatusAppError, Code: 20}
	f.OnDone(s)

	got := spans(t, p, exp)
	servers, clients := stubByKind(got, "server"), stubByKind(got, "client")
	if len(servers) != 1 || len(clients) != 2 {
		t.Fatalf("exported %d server and %d client spans, want 1 and 2 (one per attempt)", len(servers), len(clients))
	}
	srv := servers[0]
	if srv.Name != service+"/"+method || attr(srv, "rpc.system") != "apache_dubbo" || attr(srv, "rpc.service") != service ||
		attr(srv, "rpc.method") != method || attr(srv, "rpc.response.status_code") != "20" || attr(srv, "breeze.cluster") != "provider" {
		t.Errorf("server span %q attributes %v", srv.Name, srv.Attributes)
	}
	if srv.Status.Code != codes.Error {
		t.Errorf("server span status %v for an application exception, want Error", srv.Status)
	}
	first, second := clients[0], clients[1]
	if attr(first, "breeze.attempt") != "1" || attr(first, "server.address") != "10.0.0.7" || attr(first, "server.port") != "20880" ||
		attr(first, "breeze.failure") != "timeout" || attr(first, "breeze.response_flags") != "UT" || first.Status.Code != codes.Error {
		t.Errorf("first attempt's span: status %v attributes %v", first.Status, first.Attributes)
	}
	if attr(second, "breeze.attempt") != "2" || attr(second, "network.peer.address") != "10.0.0.8" || second.Status.Code != codes.Error ||
		second.SpanKind != trace.SpanKindClient {
		t.Errorf("second attempt's span: kind %v status %v attributes %v", second.SpanKind, second.Status, second.Attributes)
	}
}

// TestClientGone: an attempt in flight when the request ends (the client
// went away) is ended by OnDone, with an error.
func TestClientGone(t *testing.T) {
	p, exp := memoryPipeline(t)
	f := newFilter(t, "dubbo", &breezev1.Tracing{RandomSamplingPercentage: 100}, p)
	m := decodeFrame(t, "dubbo", readFile(t, "../../codecs/dubbo/testdata/request.bin"))
	s := &filter.Stream{Request: *m, Start: time.Now(), Upstream: "10.0.0.7:20880"}
	f.OnRequest(s)
	s.AttemptWatcher.StartAttempt(s, &s.Request)
	s.Outcome = filter.ClientGone
	s.End = time.Now()
	f.OnDone(s)
	// A late report of the attempt (never expected) changes nothing.
	s.AttemptWatcher.EndAttempt(s, filter.AttemptEnd{Failure: "reset"})
	got := spans(t, p, exp)
	clients := stubByKind(got, "client")
	if len(got) != 2 || len(clients) != 1 || clients[0].Status.Code != codes.Error || attr(clients[0], "breeze.failure") != "<absent>" {
		t.Fatalf("spans %d, client spans %v", len(got), clients)
	}
	if srv := stubByKind(got, "server"); srv[0].Status.Code != codes.Error || attr(srv[0], "breeze.response_flags") != "DC" {
		t.Errorf("server span status %v attributes %v, want Error with DC", srv[0].Status, srv[0].Attributes)
	}
}

// TestUntracedIsUntouched: a request the sampler does not draw gets no
// watcher, and its frame goes upstream as the client sent it.
func TestUntracedIsUntouched(t *testing.T) {
	p, exp := memoryPipeline(t)
	f := newFilter(t, "dubbo", &breezev1.Tracing{IgnoreClientSampled: true}, p)
	frame := withKeys(t, "dubbo", readFile(t, "../../codecs/dubbo/testdata/request.bin"), codecs.KV{Key: TraceparentKey, Value: clientParent})
	s := &filter.Stream{Request: *decodeFrame(t, "dubbo", frame), Start: time.Now()}
	f.OnRequest(s)
	f.OnDone(s)
	if s.AttemptWatcher != nil || len(s.Request.Mutations) != 0 {
		t.Errorf("untraced request: watcher %v, mutations %v", s.AttemptWatcher, s.Request.Mutations)
	}
	if got := spans(t, p, exp); len(got) != 0 {
		t.Errorf("untraced request exported %d spans", len(got))
	}
}

// TestUntracedAllocatesNothing: with tracing on, a request the sampler
// does not draw (with or without a client's trace context) allocates
// nothing in the filter.
func TestUntracedAllocatesNothing(t *testing.T) {
	p, _ := memoryPipeline(t)
	f := newFilter(t, "dubbo", &breezev1.Tracing{RandomSamplingPercentage: 0, IgnoreClientSampled: true}, p)
	for _, kv := range [][]codecs.KV{nil, {{Key: TraceparentKey, Value: clientParent}}} {
		frame := withKeys(t, "dubbo", readFile(t, "../../codecs/dubbo/testdata/request.bin"), kv...)
		s := &filter.Stream{Request: *decodeFrame(t, "dubbo", frame)}
		if n := testing.AllocsPerRun(100, func() { f.OnRequest(s); f.OnDone(s) }); n != 0 {
			t.Errorf("untraced request (keys %v): %v allocations", kv, n)
		}
	}
}
