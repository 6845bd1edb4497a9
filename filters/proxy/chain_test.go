package proxy

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/filter"
)

// recorder is an L7 filter for these tests. It records every OnDone by
// the request's "case" metadata, and does what the request's "do"
// metadata asks: "pause" (resume from another goroutine once the case's
// gate opens), "pause_reply" (answer from another goroutine once the gate
// opens), "pause_forever", "panic" (in OnRequest), "panic_response",
// "panic_done", "gate_done" (OnDone waits for the case's gate). It counts
// the requests it saw by case.
type recorder struct {
	filter.Base
	mu    sync.Mutex
	done  map[string][]filter.Outcome
	gates map[string]chan struct{}
	seen  map[string]int
}

var rec = &recorder{done: map[string][]filter.Outcome{}, gates: map[string]chan struct{}{}, seen: map[string]int{}}

func init() {
	filter.Register(&filter.Factory{
		Name:  "test.record",
		Build: func(proto.Message, filter.BuildContext) (filter.Filter, error) { return rec, nil },
	})
}

func (r *recorder) gate(c string) chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.gates[c]
	if g == nil {
		g = make(chan struct{})
		r.gates[c] = g
	}
	return g
}

func (r *recorder) OnRequest(s *filter.Stream) filter.Status {
	c, _ := s.Request.Metadata.Get("case")
	do, _ := s.Request.Metadata.Get("do")
	r.mu.Lock()
	r.seen[c]++
	r.mu.Unlock()
	switch do {
	case "pause":
		g := r.gate(c)
		go func() { <-g; s.Resume() }()
		return filter.Pause
	case "pause_reply":
		g := r.gate(c)
		go func() { <-g; s.Reply(codecs.ErrOverloaded, "rate limited by test", filter.RateLimited) }()
		return filter.Pause
	case "pause_forever":
		return filter.Pause
	case "panic":
		panic("test filter asked to panic")
	}
	return filter.Continue
}

func (r *recorder) OnResponse(s *filter.Stream) {
	if do, _ := s.Request.Metadata.Get("do"); do == "panic_response" {
		panic("test filter asked to panic in OnResponse")
	}
}

func (r *recorder) OnDone(s *filter.Stream) {
	c, _ := s.Request.Metadata.Get("case")
	r.mu.Lock()
	r.done[c] = append(r.done[c], s.Outcome)
	r.mu.Unlock()
	switch do, _ := s.Request.Metadata.Get("do"); do {
	case "panic_done":
		panic("test filter asked to panic in OnDone")
	case "gate_done":
		<-r.gate(c)
	}
}

// reset forgets every case: for a test that names its cases plainly
// ("response"), run again by -count, or after another test used the name.
// (Tests that cannot reset, as they share the recorder with a proxy still
// running, name their cases with unique.)
func (r *recorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.done)
	clear(r.gates)
	clear(r.seen)
}

// requests is how many requests of case c reached the filter.
func (r *recorder) requests(c string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[c]
}

func (r *recorder) outcomes(c string) []filter.Outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]filter.Outcome(nil), r.done[c]...)
}

// doneOnce waits for the case's OnDone and checks it ran once.
func doneOnce(t *testing.T, c string) filter.Outcome {
	t.Helper()
	eventually(t, "OnDone of "+c, func() bool { return len(rec.outcomes(c)) > 0 })
	o := rec.outcomes(c)
	if len(o) != 1 {
		t.Fatalf("%s: OnDone ran %d times: %+v", c, len(o), o)
	}
	return o[0]
}

func chainCfg(b *backend, extra ...string) string {
	return cfg(`  - {match: {metadata: [{key: method, exact: A}]}, route: {cluster: b}, timeout: 0.1s}`,
		"- name: b\n  endpoints:\n"+ep(b, ""), append([]string{"filters: [{name: test.record}]"}, extra...)...)
}

// Every way a request can end runs OnDone exactly once, with the outcome
// and flag that say how it ended.
func TestOnDoneOncePerEnding(t *testing.T) {
	rec.reset()
	b := newBackend(t, "b")
	addr := startProxy(t, chainCfg(b))
	c := dial(t, addr)
	call := func(name string, md ...string) tmsg {
		t.Helper()
		m, err := c.call(0, "x", append([]string{"case", name}, md...)...)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return m
	}

	t.Run("response", func(t *testing.T) {
		call("response", "method", "A")
		if o := doneOnce(t, "response"); !o.Responded || o.Status != codecs.StatusOK || o.Flags != 0 {
			t.Fatalf("outcome %+v", o)
		}
	})
	t.Run("local reply", func(t *testing.T) {
		call("noroute", "method", "Z")
		if o := doneOnce(t, "noroute"); o.LocalReply != codecs.ErrNoRoute || o.Flags != filter.NoRoute {
			t.Fatalf("outcome %+v", o)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		call("timeout", "method", "A", "hang", "1")
		if o := doneOnce(t, "timeout"); o.LocalReply != codecs.ErrTimeout || o.Flags != filter.UpstreamRequestTimeout {
			t.Fatalf("outcome %+v", o)
		}
	})
	t.Run("upstream reset", func(t *testing.T) {
		call("reset", "method", "A", "drop", "1")
		if o := doneOnce(t, "reset"); o.LocalReply != codecs.ErrNoHealthyUpstream || o.Flags != filter.UpstreamConnectionTermination {
			t.Fatalf("outcome %+v", o)
		}
	})
	t.Run("oneway", func(t *testing.T) {
		c.send(codecs.Oneway, 0, "ow", "case", "oneway", "method", "A")
		if o := doneOnce(t, "oneway"); !o.Sent || o.Flags != 0 {
			t.Fatalf("outcome %+v", o)
		}
	})
	t.Run("filter answers after pause", func(t *testing.T) {
		ch := c.send(codecs.Request, 0, "x", "case", "paused_reply", "method", "A", "do", "pause_reply")
		close(rec.gate("paused_reply"))
		if m := <-ch; m.status != codecs.StatusError || md(m, "error") != "overloaded" {
			t.Fatalf("reply %+v", m)
		}
		if o := doneOnce(t, "paused_reply"); o.LocalReply != codecs.ErrOverloaded || o.Flags != filter.RateLimited {
			t.Fatalf("outcome %+v", o)
		}
	})
	t.Run("downstream close in flight", func(t *testing.T) {
		c2 := dial(t, addr)
		c2.send(codecs.Request, 0, "x", "case", "dc", "method", "A", "hang", "1")
		c2.send(codecs.Request, 0, "x", "case", "dc_paused", "method", "A", "do", "pause_forever")
		eventually(t, "the hanging request upstream", func() bool { return b.received.Load() > 0 })
		c2.c.Close()
		for _, name := range []string{"dc", "dc_paused"} {
			if o := doneOnce(t, name); o.Flags != filter.DownstreamConnectionTermination || o.Responded || o.LocalReply != 0 {
				t.Fatalf("%s: outcome %+v", name, o)
			}
		}
	})
	t.Run("recovered panic", func(t *testing.T) {
		c3 := dial(t, addr)
		m, err := c3.call(0, "x", "case", "panic", "method", "A", "do", "panic")
		if err == nil && md(m, "error") != "internal" {
			t.Fatalf("a panicking filter's request got %+v", m)
		}
		if o := doneOnce(t, "panic"); o.LocalReply != codecs.ErrInternal || o.Flags != filter.InternalError {
			t.Fatalf("outcome %+v", o)
		}
	})
	// A later request through the same connection, so that any second
	// OnDone of the cases above would have happened by now.
	call("barrier", "method", "A")
	doneOnce(t, "barrier")
	for _, name := range []string{"response", "noroute", "timeout", "reset", "oneway", "paused_reply", "dc", "dc_paused", "panic"} {
		if n := len(rec.outcomes(name)); n != 1 {
			t.Errorf("%s: OnDone ran %d times", name, n)
		}
	}
}

// A paused request does not hold back later requests of its connection;
// resumed from another goroutine, it goes on to the upstream and its
// client gets the answer.
func TestPausedRequestDoesNotBlockTheConnection(t *testing.T) {
	rec.reset()
	b := newBackend(t, "b")
	addr := startProxy(t, chainCfg(b))
	c := dial(t, addr)
	const n = 20
	paused := make([]chan tmsg, n)
	for i := range paused {
		paused[i] = c.send(codecs.Request, 0, fmt.Sprintf("paused-%d", i), "case", fmt.Sprintf("p%d", i), "method", "A", "do", "pause")
	}
	// Many more frames follow: the read buffer moves on while the paused
	// requests keep their messages.
	for i := range 50 {
		m, err := c.call(0, fmt.Sprintf("next-%d", i), "case", "after", "method", "A")
		if err != nil || m.body != fmt.Sprintf("next-%d", i) {
			t.Fatalf("request behind paused ones: %+v %v", m, err)
		}
	}
	for i := range paused {
		select {
		case m := <-paused[i]:
			t.Fatalf("paused request answered before it was resumed: %+v", m)
		default:
		}
	}
	for i := range paused {
		close(rec.gate(fmt.Sprintf("p%d", i)))
	}
	for i, ch := range paused {
		select {
		case m := <-ch:
			if m.body != fmt.Sprintf("paused-%d", i) || md(m, "server") != "b" {
				t.Fatalf("resumed request %d: %+v", i, m)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("resumed request %d never answered", i)
		}
		if o := doneOnce(t, fmt.Sprintf("p%d", i)); !o.Responded {
			t.Fatalf("outcome %+v", o)
		}
	}
}

// The mutation filter writes the proxy's and the route's key/values into
// requests and responses; the route's legacy request_mutation still works.
func TestMutationFilterRequestAndResponse(t *testing.T) {
	b := newBackend(t, "b")
	addr := startProxy(t, cfg(`  - route: {cluster: c}
    request_mutation: [{key: legacy, value: "yes"}]
    typed_per_filter_config:
      mutation: {"@type": type.googleapis.com/breeze.filters.mutation.v1.Mutations, request: [{key: tenant, value: route}], response: [{key: route, value: r1}]}`,
		"- name: c\n  endpoints:\n"+ep(b, ""),
		`filters: [{name: mutation, typed_config: {"@type": type.googleapis.com/breeze.filters.mutation.v1.Mutations, request: [{key: env, value: prod}], response: [{key: served-by, value: breeze}]}}]`))
	c := dial(t, addr)
	m, err := c.call(0, "x", "tenant", "client")
	if err != nil {
		t.Fatal(err)
	}
	if seen := md(m, "seen"); !strings.Contains(seen, "env=prod;") || !strings.Contains(seen, "tenant=route;") || !strings.Contains(seen, "legacy=yes;") {
		t.Fatalf("upstream saw %q", seen)
	}
	if md(m, "served-by") != "breeze" || md(m, "route") != "r1" || md(m, "server") != "b" {
		t.Fatalf("client got %+v", m)
	}
}
