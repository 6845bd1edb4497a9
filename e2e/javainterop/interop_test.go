package javainterop

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// throughBreezeConfig routes org.breeze.Greeter between two Java providers
// (endpoint labels version=v1/v2) and a dubbo-go provider. No route matches
// a method other than Greet, Slow, Whoami and Mirror.
const throughBreezeConfig = `
admin_address: "{{.Admin}}"
listeners:
- name: dubbo
  address: "{{.Listen}}"
  proxy:
    stat_prefix: java
    codec: dubbo
    route_config:
      routes:
      - name: unversioned-probe
        match: {metadata: [{key: probe, exact: unversioned}, {key: version, present: false}]}
        route: {cluster: gogreeter}
      - name: go-backend
        match: {metadata: [{key: backend, exact: go}]}
        route: {cluster: gogreeter}
      - name: slow-with-timeout
        match: {metadata: [{key: method, exact: Slow}]}
        route: {cluster: greeter, subset: {version: v1}}
        timeout: 0.3s
      - name: gold-to-v2
        match: {metadata: [{key: tenant, exact: gold}]}
        route: {cluster: greeter, subset: {version: v2}}
        request_mutation:
        - {key: x-breeze-route, value: gold-to-v2}
        typed_per_filter_config:
          mutation:
            "@type": type.googleapis.com/breeze.filters.mutation.v1.Mutations
            response: [{key: x-breeze-served-by, value: gold-to-v2}]
      - name: mirror-to-v1
        match: {metadata: [{key: method, exact: Mirror}]}
        route: {cluster: greeter, subset: {version: v1}}
      - name: whoami-to-v2
        match: {metadata: [{key: method, exact: Whoami}]}
        route: {cluster: greeter, subset: {version: v2}}
      - name: greet-to-v1
        match: {metadata: [{key: method, exact: Greet}]}
        route: {cluster: greeter, subset: {version: v1}}
    clusters:
    - name: greeter
      endpoints:
      - {address: 127.0.0.1, port: {{port "java-v1"}}, labels: {version: v1}}
      - {address: 127.0.0.1, port: {{port "java-v2"}}, labels: {version: v2}}
    - name: gogreeter
      endpoints: [{address: 127.0.0.1, port: {{port "go-1"}}}]
`

// javaHeartbeat is the Java consumer's heartbeat period: short, so that its
// heartbeats cross the proxy within the test.
const javaHeartbeat = time.Second

// TestJavaThroughBreeze: a Java consumer (generic and typed calls) through
// Breeze to Java providers and to a dubbo-go provider, and a dubbo-go
// consumer through Breeze to the Java providers. The Java consumer reaches
// the proxy through a tee that records every frame.
func TestJavaThroughBreeze(t *testing.T) {
	t.Parallel()
	harness.BreezeBin(t)
	setup := time.Now()
	ps := launchJavaProviders(t, javaProviderSpec{Name: "java-v1"}, javaProviderSpec{Name: "java-v2"})
	jc := launchJavaClient(t, javaClientSpec{Heartbeat: javaHeartbeat})
	gp := harness.StartProvider(t, harness.ProviderSpec{Name: "go-1"})
	waitJavaProviders(t, ps...)
	jc.waitReady(t)
	ports := javaPorts(ps...)
	ports[gp.Name] = gp.Port
	proxy := harness.StartProxy(t, throughBreezeConfig, ports)
	down := harness.StartTee(t, proxy.Addr)
	t.Logf("3 JVMs, a dubbo-go provider and the proxy ready in %s", time.Since(setup).Round(100*time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The first call of each kind makes Dubbo's reference and connection.
	for _, generic := range []bool{true, false} {
		if _, err := jc.Call(ctx, javaCall{Addr: down.Addr, Method: "Greet", Arg: "warm-up", Generic: generic}); err != nil {
			t.Fatalf("first Java call through the proxy (generic %v): %v", generic, err)
		}
	}

	t.Run("RouteByMethod", func(t *testing.T) {
		for _, generic := range []bool{true, false} {
			greet := harness.Served(t, runJava(ctx, jc, 20, 4, func(i int) javaCall {
				return javaCall{Addr: down.Addr, Method: "Greet", Arg: fmt.Sprintf("m-%v-%d", generic, i), Generic: generic}
			}))
			harness.ExactlyFrom(t, fmt.Sprintf("Greet (generic %v)", generic), greet, "java-v1")
			who := harness.Served(t, runJava(ctx, jc, 20, 4, func(int) javaCall {
				return javaCall{Addr: down.Addr, Method: "Whoami", Generic: generic}
			}))
			harness.ExactlyFrom(t, fmt.Sprintf("Whoami (generic %v)", generic), who, "java-v2")
		}
	})

	t.Run("RouteByAttachmentToSubsetWithMutation", func(t *testing.T) {
		for _, generic := range []bool{true, false} {
			outs := runJava(ctx, jc, 20, 4, func(i int) javaCall {
				return javaCall{Addr: down.Addr, Method: "Greet", Arg: fmt.Sprintf("gold-%v-%d", generic, i), Generic: generic,
					Attachments: map[string]string{"tenant": "gold", "user": "u42"}}
			})
			harness.ExactlyFrom(t, "tenant=gold", harness.Served(t, outs), "java-v2")
			for _, o := range outs {
				a := o.Reply.Attachments
				if a["tenant"] != "gold" || a["user"] != "u42" || a["x-breeze-route"] != "gold-to-v2" {
					t.Fatalf("the Java provider saw attachments %v; want tenant=gold, user=u42 and the proxy's x-breeze-route=gold-to-v2", a)
				}
			}
			silver := runJava(ctx, jc, 20, 4, func(i int) javaCall {
				return javaCall{Addr: down.Addr, Method: "Greet", Arg: fmt.Sprintf("silver-%v-%d", generic, i), Generic: generic,
					Attachments: map[string]string{"tenant": "silver"}}
			})
			harness.ExactlyFrom(t, "tenant=silver", harness.Served(t, silver), "java-v1")
			// The route's response mutation reaches the Java caller as a
			// response attachment; other routes' responses carry none.
			for tenant, want := range map[string]string{"gold": "gold-to-v2", "silver": ""} {
				r, err := jc.callRaw(ctx, javaCall{Addr: down.Addr, Method: "Greet", Arg: "resp-" + tenant, Generic: generic,
					Attachments: map[string]string{"tenant": tenant}})
				if err != nil || r.Error != "" {
					t.Fatalf("tenant=%s: %v %s", tenant, err, r.Error)
				}
				if got := r.ResponseAttachments["x-breeze-served-by"]; got != want {
					t.Fatalf("tenant=%s (generic %v): the Java caller got response attachments %v; want x-breeze-served-by=%q", tenant, generic, r.ResponseAttachments, want)
				}
			}
			for _, o := range silver {
				if _, ok := o.Reply.Attachments["x-breeze-route"]; ok || o.Reply.Attachments["tenant"] != "silver" {
					t.Fatalf("tenant=silver: the provider saw attachments %v", o.Reply.Attachments)
				}
			}
		}
	})

	// Mirror carries Java's richer hessian2 (class definitions, references,
	// typed maps and lists, dates, decimals, binary, chunked strings) in the
	// arguments, which the codec skips to reach the attachments, and in the
	// result, which it skips to reach the response's attachments. The
	// mutation of the gold route rebuilds the attachments behind them.
	t.Run("RichHessian2Values", func(t *testing.T) {
		for _, generic := range []bool{true, false} {
			gold := runJava(ctx, jc, 6, 3, func(i int) javaCall {
				return javaCall{Addr: down.Addr, Method: "Mirror", Arg: fmt.Sprintf("rich-gold-%v-%d", generic, i), Generic: generic,
					Attachments: map[string]string{"tenant": "gold"}}
			})
			harness.ExactlyFrom(t, fmt.Sprintf("Mirror with tenant=gold (generic %v)", generic), harness.Served(t, gold), "java-v2")
			for _, o := range gold {
				if o.Reply.Attachments["x-breeze-route"] != "gold-to-v2" {
					t.Fatalf("Mirror with tenant=gold: the provider saw attachments %v; want the proxy's x-breeze-route", o.Reply.Attachments)
				}
			}
			plain := runJava(ctx, jc, 6, 3, func(i int) javaCall {
				return javaCall{Addr: down.Addr, Method: "Mirror", Arg: fmt.Sprintf("rich-%v-%d", generic, i), Generic: generic}
			})
			harness.ExactlyFrom(t, fmt.Sprintf("Mirror (generic %v)", generic), harness.Served(t, plain), "java-v1")
		}
	})

	t.Run("ManyCallsInFlight", func(t *testing.T) {
		outs := runJava(ctx, jc, 300, 16, func(i int) javaCall {
			return javaCall{Addr: down.Addr, Method: "Greet", Arg: fmt.Sprintf("many-%d", i), Generic: i%2 == 0}
		})
		harness.ExactlyFrom(t, "Greet", harness.Served(t, outs), "java-v1")
	})

	t.Run("NoRoute", func(t *testing.T) {
		for i := range 3 {
			_, err := jc.Call(ctx, javaCall{Addr: down.Addr, Method: "Hidden", Arg: fmt.Sprint(i), Generic: true, TimeoutMS: 5000})
			je, jerr := asJava(err)
			if jerr != nil {
				t.Fatalf("a call no route matches: %v; want a Dubbo exception", jerr)
			}
			if i == 0 {
				t.Logf("no route, as the Java client sees it: %s; causes %v", je, je.Result.Causes)
			}
			if je.Result.ErrorClass != "org.apache.dubbo.rpc.RpcException" || !je.HasCause("RemotingException") {
				t.Errorf("no route: Java raised %s with causes %v; want an RpcException caused by a RemotingException", je.Result.ErrorClass, je.Result.Causes)
			}
			if !je.HasCause("breeze proxy") || !je.HasCause("Hidden") {
				t.Errorf("no route: the Java error does not carry the proxy's reply text (naming the method): %s", je)
			}
			if je.Elapsed() > 2*time.Second {
				t.Errorf("no route: the error reached the Java client after %s; want it at once (its own timeout is 5s)", je.Elapsed())
			}
			if _, err := jc.Call(ctx, javaCall{Addr: down.Addr, Method: "Greet", Arg: "after-no-route", Generic: true}); err != nil {
				t.Fatalf("a routed call after a no-route error: %v", err)
			}
		}
		if n := proxy.Metric(t, "breeze_local_replies_total", `reason="no_route"`); n < 3 {
			t.Errorf("breeze_local_replies_total{reason=no_route} = %v, want >= 3", n)
		}
	})

	t.Run("RouteTimeout", func(t *testing.T) {
		lateBefore := proxy.Metric(t, "breeze_dropped_total", `reason="late_response"`)
		for _, generic := range []bool{true, false} {
			_, err := jc.Call(ctx, javaCall{Addr: down.Addr, Method: "Slow", Arg: "2000", Generic: generic, TimeoutMS: 5000})
			je, jerr := asJava(err)
			if jerr != nil {
				t.Fatalf("Slow(2000) under a 300ms route timeout (generic %v): %v; want a Dubbo exception", generic, jerr)
			}
			t.Logf("route timeout, as the Java client sees it (generic %v): %s", generic, je)
			if je.Result.Code == nil || *je.Result.Code != rpcTimeoutException || !je.HasCause("TimeoutException") {
				t.Errorf("route timeout: Java raised %s code %v causes %v; want an RpcException with code TIMEOUT_EXCEPTION (2) caused by a TimeoutException",
					je.Result.ErrorClass, je.Result.Code, je.Result.Causes)
			}
			if e := je.Elapsed(); e < 250*time.Millisecond || e > 2*time.Second {
				t.Errorf("route timeout: the error came after %s; want it about 300ms after the call (the client's own timeout is 5s)", e)
			}
		}
		// The provider's late answers reach the proxy, which drops them; the
		// connection keeps carrying calls.
		if err := proxy.WaitMetric(ctx, "the two late answers to be dropped", "breeze_dropped_total",
			func(v float64) bool { return v >= lateBefore+2 }, `reason="late_response"`); err != nil {
			t.Fatal(err)
		}
		harness.Served(t, runJava(ctx, jc, 40, 4, func(i int) javaCall {
			return javaCall{Addr: down.Addr, Method: "Greet", Arg: fmt.Sprintf("after-timeout-%d", i), Generic: i%2 == 0}
		}))
		if r, err := jc.Call(ctx, javaCall{Addr: down.Addr, Method: "Slow", Arg: "20", Generic: true}); err != nil || r.Provider != "java-v1" {
			t.Errorf("a fast Slow call on the same route: %+v %v", r, err)
		}
	})

	t.Run("DubboGoConsumerToJavaProvider", func(t *testing.T) {
		c := harness.StartClient(t, proxy.Addr, harness.ClientSpec{Heartbeat: time.Second})
		count := map[string]int{}
		for i := range 20 {
			arg := fmt.Sprintf("go-%d", i)
			r, err := c.Greet(ctx, arg, nil)
			if err != nil || r.Arg != arg {
				t.Fatalf("dubbo-go Greet(%q) via the proxy to Java: %+v %v", arg, r, err)
			}
			count[r.Provider]++
		}
		harness.ExactlyFrom(t, "dubbo-go Greet", count, "java-v1")
		r, err := c.Whoami(ctx, nil)
		if err != nil || r.Provider != "java-v2" || r.Method != "Whoami" {
			t.Fatalf("dubbo-go Whoami: %+v %v; want java-v2", r, err)
		}
		r, err = c.Greet(ctx, "gold", map[string]string{"tenant": "gold"})
		if err != nil || r.Provider != "java-v2" || r.Attachments["x-breeze-route"] != "gold-to-v2" || r.Attachments["tenant"] != "gold" {
			t.Fatalf("dubbo-go Greet with tenant=gold: %+v %v; want java-v2 with the proxy's attachment", r, err)
		}
		r, err = c.Slow(ctx, 15, nil)
		if err != nil || r.Provider != "java-v1" || r.Arg != "15" {
			t.Fatalf("dubbo-go Slow(15) (an int argument): %+v %v", r, err)
		}
	})

	// Java calls an unversioned service "0.0.0" (body and attachment),
	// dubbo-go "" (and an empty version attachment): the codec offers no
	// version for either, so one route on "no version" catches both.
	t.Run("UnversionedFromBothClients", func(t *testing.T) {
		probe := map[string]string{"probe": "unversioned"}
		for _, generic := range []bool{true, false} {
			r, err := jc.Call(ctx, javaCall{Addr: down.Addr, Method: "Greet", Arg: "unversioned-java", Generic: generic, Attachments: probe})
			if err != nil || r.Provider != "go-1" {
				t.Errorf("unversioned Java call (generic %v): %+v %v; want the route on version present: false (go-1)", generic, r, err)
			}
		}
		c := harness.StartClient(t, proxy.Addr, harness.ClientSpec{})
		r, err := c.Greet(ctx, "unversioned-go", probe)
		if err != nil || r.Provider != "go-1" {
			t.Errorf("unversioned dubbo-go call: %+v %v; want the route on version present: false (go-1)", r, err)
		}
	})

	t.Run("JavaConsumerToDubboGoProvider", func(t *testing.T) {
		for _, generic := range []bool{true, false} {
			outs := runJava(ctx, jc, 20, 4, func(i int) javaCall {
				return javaCall{Addr: down.Addr, Method: "Greet", Arg: fmt.Sprintf("to-go-%v-%d", generic, i), Generic: generic,
					Attachments: map[string]string{"backend": "go"}}
			})
			harness.ExactlyFrom(t, fmt.Sprintf("backend=go (generic %v)", generic), harness.Served(t, outs), "go-1")
			if a := outs[0].Reply.Attachments; a["backend"] != "go" {
				t.Errorf("the dubbo-go provider saw attachments %v; want backend=go", a)
			}
			r, err := jc.Call(ctx, javaCall{Addr: down.Addr, Method: "Slow", Arg: "15", Generic: generic, Attachments: map[string]string{"backend": "go"}})
			if err != nil || r.Provider != "go-1" || r.Arg != "15" {
				t.Fatalf("Java Slow(15) to dubbo-go (generic %v): %+v %v", generic, r, err)
			}
		}
	})

	t.Run("JavaHeartbeats", func(t *testing.T) {
		// The Java client heartbeats after javaHeartbeat without reading;
		// the proxy answers, so it never reconnects.
		const rounds = 3
		if err := down.WaitFor(ctx, fmt.Sprintf("%d Java heartbeats answered", rounds), func(s harness.TeeState) bool {
			return s.HeartbeatRoundTrips(harness.Up) >= rounds
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := jc.Call(ctx, javaCall{Addr: down.Addr, Method: "Greet", Arg: "after-heartbeats"}); err != nil {
			t.Fatal(err)
		}
		if st := down.State(); st.Conns != 1 || st.Open != 1 {
			t.Errorf("the Java client made %d connections to the proxy (%d open); want its one connection kept", st.Conns, st.Open)
		}
		if n := proxy.Metric(t, "breeze_heartbeats_total", `side="downstream"`); n < rounds {
			t.Errorf("breeze_heartbeats_total{side=downstream} = %v, want >= %d", n, rounds)
		}
	})

	t.Run("WireIsHessian2AndIDsRoundTrip", func(t *testing.T) {
		st := down.State()
		type key struct {
			conn int
			id   uint64
		}
		asked := map[key]bool{}
		var requests, big int
		for _, f := range st.Frames {
			if ser := f.Header.Flags & 0x1f; ser != harness.SerialHessian2 {
				t.Fatalf("%s: serialization id %d, want hessian2 (2)", f, ser)
			}
			if f.Dir == harness.Up && f.Header.IsRequest() && f.Header.IsTwoWay() {
				asked[key{f.Conn, f.Header.ID}] = true
				if !f.Header.IsEvent() {
					requests++
					if f.Header.ID > 1<<32 {
						big++
					}
				}
			}
		}
		for _, f := range st.Frames {
			if f.Dir == harness.Down && !f.Header.IsRequest() {
				delete(asked, key{f.Conn, f.Header.ID})
			}
		}
		if len(asked) > 0 {
			t.Errorf("%d two-way frames of the Java client got no reply with their id", len(asked))
		}
		t.Logf("%d Java requests (%d with ids above 2^32) all answered with their own 64-bit ids", requests, big)
		if n := proxy.Metric(t, "breeze_protocol_errors_total"); n != 0 {
			t.Errorf("the proxy refused %v frames (breeze_protocol_errors_total); want none from Dubbo Java or dubbo-go", n)
		}
		writeJavaFrames(t, javaFrames(t, st))
	})
}

// TestJavaProviderGracefulShutdown: a Java provider stopped with SIGTERM runs
// Dubbo's graceful shutdown: it sends READONLY on every connection, then
// waits for its clients to leave. Calls in flight on it complete; new calls
// go to the other provider; the proxy closes the drained connection, so the
// provider exits without waiting out its shutdown timeout.
func TestJavaProviderGracefulShutdown(t *testing.T) {
	t.Parallel()
	harness.BreezeBin(t)
	const shutdownWait = 30 * time.Second
	ps := startJavaProviders(t,
		javaProviderSpec{Name: "g1", ShutdownWait: shutdownWait},
		javaProviderSpec{Name: "g2", ShutdownWait: shutdownWait})
	g1, g2 := ps[0], ps[1]
	up := harness.StartTee(t, g1.Addr)
	proxy := harness.StartProxy(t, `
admin_address: "{{.Admin}}"
listeners:
- name: dubbo
  address: "{{.Listen}}"
  proxy:
    stat_prefix: java
    codec: dubbo
    route_config:
      routes:
      - match: {metadata: [{key: pin, exact: g1}]}
        route: {cluster: greeter, subset: {name: g1}}
      - route: {cluster: greeter}
    clusters:
    - name: greeter
      endpoints:
      - {address: 127.0.0.1, port: {{port "g1"}}, labels: {name: g1}}
      - {address: 127.0.0.1, port: {{port "g2"}}, labels: {name: g2}}
`, map[string]int{"g1": up.Port(), "g2": g2.Port})
	c := harness.StartClient(t, proxy.Addr, harness.ClientSpec{Timeout: 8 * time.Second, Heartbeat: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	before := map[string]int{}
	for i := range 10 {
		r, err := c.Greet(ctx, fmt.Sprint("before-", i), nil)
		if err != nil {
			t.Fatal(err)
		}
		before[r.Provider]++
	}
	if before["g1"] == 0 || before["g2"] == 0 {
		t.Fatalf("before the shutdown calls should spread over g1 and g2: %v", before)
	}

	// Calls in flight on g1 when it is told to stop.
	const inFlight, slowMS = 4, 2500
	type res struct {
		provider string
		err      error
	}
	slow := make(chan res, inFlight)
	for range inFlight {
		go func() {
			r, err := c.Slow(ctx, slowMS, map[string]string{"pin": "g1"})
			slow <- res{r.Provider, err}
		}()
	}
	if err := g1.Lines.waitCount(ctx, fmt.Sprintf("START Slow %d", slowMS), inFlight); err != nil {
		t.Fatalf("g1: %v", err)
	}
	stopped := time.Now()
	if err := syscall.Kill(g1.Proc.Pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// When the proxy closes its connection to g1, measured as it happens.
	upClosed := make(chan error, 1)
	var closedAt time.Duration
	go func() {
		err := up.WaitFor(ctx, "the proxy to close its drained connection to g1", func(s harness.TeeState) bool {
			return s.Open == 0
		})
		closedAt = time.Since(stopped)
		upClosed <- err
	}()
	if err := proxy.WaitMetric(ctx, "the proxy to see g1's READONLY", "breeze_upstream_connection_events_total",
		func(v float64) bool { return v >= 1 }, `event="goaway"`); err != nil {
		t.Fatal(err)
	}
	readonly := up.State().Find(func(f harness.TeeFrame) bool {
		return f.Dir == harness.Down && f.Header.IsEvent() && f.Header.IsRequest() && !f.Header.IsTwoWay()
	})
	if len(readonly) == 0 {
		t.Fatalf("the proxy counted a goaway but the tee saw no oneway event from g1")
	}
	ro := readonly[0]
	if body := ro.Raw[harness.HeaderLen:]; string(body) != "\x01R" {
		t.Errorf("g1's oneway event has body % x; want the hessian2 string \"R\" (01 52)", body)
	}
	t.Logf("g1's READONLY: oneway event flags=%#02x id=%d body % x, %s after SIGTERM",
		ro.Header.Flags, ro.Header.ID, ro.Raw[harness.HeaderLen:], ro.At.Sub(stopped).Round(time.Millisecond))
	writeJavaFrames(t, map[string][]byte{"readonly_event.bin": ro.Raw})

	// New calls: all to g2 while g1 drains.
	during := map[string]int{}
	for i := range 20 {
		arg := fmt.Sprint("during-", i)
		r, err := c.Greet(ctx, arg, nil)
		if err != nil || r.Arg != arg {
			t.Fatalf("call %d after g1's READONLY: %+v %v", i, r, err)
		}
		during[r.Provider]++
	}
	if during["g1"] != 0 {
		t.Errorf("after g1's READONLY, %d calls still went to g1 (%v)", during["g1"], during)
	}
	for range inFlight {
		select {
		case r := <-slow:
			if r.err != nil || r.provider != "g1" {
				t.Errorf("a call in flight on g1 during its graceful shutdown: provider %q, %v", r.provider, r.err)
			}
		case <-ctx.Done():
			t.Fatal("calls in flight on g1 did not finish")
		}
	}
	// The last answer drained g1's connection: the proxy closes it, which
	// lets Dubbo's shutdown go on.
	if err := <-upClosed; err != nil {
		t.Fatal(err)
	}
	if slowEnd := time.Duration(slowMS) * time.Millisecond; closedAt > slowEnd+3*time.Second {
		t.Errorf("the proxy closed its drained connection to g1 %s after SIGTERM; want it soon after the last call in flight (%s)", closedAt, slowEnd)
	}
	// Dubbo's shutdown then goes on (it takes several seconds of its own)
	// instead of waiting out shutdownWait for its last client to leave.
	select {
	case <-g1.Proc.Done():
		t.Logf("the proxy closed its connection to g1 %s after SIGTERM; g1 exited after %s (its shutdown waits up to %s for clients to leave)",
			closedAt.Round(time.Millisecond), time.Since(stopped).Round(time.Millisecond), shutdownWait)
	case <-time.After(shutdownWait):
		t.Fatalf("g1 still running %s after SIGTERM", shutdownWait)
	}
	if !strings.Contains(g1.Proc.Output(), "END Slow") {
		t.Errorf("g1 never finished a Slow call:\n%s", g1.Proc.Output())
	}
	if n := proxy.Metric(t, "breeze_local_replies_total"); n != 0 {
		t.Errorf("the proxy answered %v calls itself during a graceful shutdown; want none", n)
	}
}

// TestJavaProviderIdleTimeout: a Java provider closes a connection that
// carried nothing for 3 heartbeat periods (its server has no heartbeats of
// its own; Java clients keep their connections alive). The proxy's idle
// upstream connection is closed that way, and the next call still succeeds.
func TestJavaProviderIdleTimeout(t *testing.T) {
	t.Parallel()
	harness.BreezeBin(t)
	const heartbeat = 500 * time.Millisecond
	p := startJavaProviders(t, javaProviderSpec{Name: "idle", Heartbeat: heartbeat})[0]
	up := harness.StartTee(t, p.Addr)
	proxy := harness.StartProxy(t, `
admin_address: "{{.Admin}}"
listeners:
- name: dubbo
  address: "{{.Listen}}"
  proxy:
    stat_prefix: java
    codec: dubbo
    route_config:
      routes:
      - route: {cluster: greeter}
    clusters:
    - name: greeter
      endpoints: [{address: 127.0.0.1, port: {{port "tee"}}}]
`, map[string]int{"tee": up.Port()})
	c := harness.StartClient(t, proxy.Addr, harness.ClientSpec{Heartbeat: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if r, err := c.Greet(ctx, "first", nil); err != nil || r.Provider != "idle" {
		t.Fatalf("first call: %+v %v", r, err)
	}
	// Either the provider closes the idle connection (3 × 500ms), or the
	// proxy keeps it alive with heartbeats of its own.
	var closed bool
	if err := up.WaitFor(ctx, "the provider to close the idle connection, or proxy heartbeats to keep it", func(s harness.TeeState) bool {
		closed = s.Conns >= 1 && s.Open == 0
		return closed || s.HeartbeatRoundTrips(harness.Up) >= 5
	}); err != nil {
		t.Fatal(err)
	}
	if closed {
		// The tee has seen the close; wait until the proxy has too, or the
		// next call may still be written to the closing connection (a race
		// inherent to any client whose server closes idle connections).
		if err := proxy.WaitMetric(ctx, "the proxy to see the provider close its idle connection", "breeze_upstream_connection_events_total",
			func(v float64) bool { return v >= 1 }, `event="close"`); err != nil {
			t.Fatal(err)
		}
		st := up.State()
		last := st.Frames[len(st.Frames)-1]
		t.Logf("the Java provider closed the proxy's idle upstream connection (last frame %s); the proxy sent it %d heartbeats",
			last, st.HeartbeatRoundTrips(harness.Up))
	} else {
		t.Logf("the proxy keeps its upstream connection alive with heartbeats")
	}
	for i := range 5 {
		arg := fmt.Sprint("after-idle-", i)
		if r, err := c.Greet(ctx, arg, nil); err != nil || r.Arg != arg {
			t.Fatalf("call after the idle period: %+v %v", r, err)
		}
	}
	if st := up.State(); closed && st.Conns < 2 {
		t.Errorf("the proxy made %d upstream connections; want a new one after the idle close", st.Conns)
	}
}
