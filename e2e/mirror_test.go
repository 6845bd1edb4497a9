package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// mirrorConfig routes every call to the v1 provider and mirrors to v2
// (another subset of the same cluster, as Aeraki's samples do): every
// call of the gate phase (attachment phase: gate), a quarter of the rest.
const mirrorConfig = `
admin_address: "{{.Admin}}"
listeners:
- name: dubbo
  address: "{{.Listen}}"
  proxy:
    stat_prefix: e2e
    codec: dubbo
    route_config:
      routes:
      - match: {metadata: [{key: phase, exact: gate}]}
        route: {cluster: greeter, subset: {version: v1}, request_mirror_policies: [{cluster: greeter, subset: {version: v2}}]}
        timeout: 60s
      - route: {cluster: greeter, subset: {version: v1}, request_mirror_policies: [{cluster: greeter, subset: {version: v2}, percentage: 25}]}
    clusters:
    - name: greeter
      endpoints:
      - {address: 127.0.0.1, port: {{port "primary"}}, labels: {version: v1}}
      - {address: 127.0.0.1, port: {{port "mirror"}}, labels: {version: v2}}
`

// mirrorResults reads breeze_mirror_total by result.
func mirrorResults(t *testing.T, p *harness.Proxy) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	text, err := p.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int{}
	for _, r := range []string{"sent", "answered", "timeout", "reset", "connect_failure", "internal", "dropped_overflow", "no_healthy_upstream", "encode_error"} {
		if v := int(harness.SumMetric(text, "breeze_mirror_total", `result="`+r+`"`)); v > 0 {
			m[r] = v
		}
	}
	return m
}

// ended is how many shadows sent have their outcome.
func ended(m map[string]int) int {
	return m["answered"] + m["timeout"] + m["reset"] + m["connect_failure"] + m["internal"]
}

// TestMirror: real dubbo-go providers, v1 the primary, v2 the mirror.
// (1) v2 holds every call at a gate: all 50 calls are answered by v1 while
// v2 holds their 50 shadows (counted: no shadow has ended when the last
// answer arrives). (2) A quarter of 400 calls is mirrored: v2 executes
// exactly the shadows the proxy sent, within 5σ of 100, and v1 every call
// once. (3) v2 is killed: 200 more calls, none fails; the shadows fail
// and are counted.
func TestMirror(t *testing.T) {
	harness.BreezeBin(t)
	primary := harness.StartProvider(t, harness.ProviderSpec{Name: "primary"})
	mirror := harness.StartProvider(t, harness.ProviderSpec{Name: "mirror"})
	proxy := harness.StartProxy(t, mirrorConfig, ports(primary, mirror))
	c := newClient(t, proxy.Addr, harness.ClientSpec{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// (1) A mirror that holds everything delays nothing.
	const gated = 50
	mirror.Gate(t, "Greet")
	outs := runCalls(ctx, c, gated, 8, greets("gate", func(int) map[string]string { return map[string]string{"phase": "gate"} }))
	harness.ExactlyFrom(t, "gate phase", harness.Served(t, outs), "primary")
	atLastAnswer := mirrorResults(t, proxy)
	s, err := mirror.WaitStats(ctx, fmt.Sprintf("the mirror holding %d shadows", gated), func(s harness.ProviderStats) bool { return s.Held == gated })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gate: %d calls answered by v1; at the last answer the proxy counted %v; v2 then held %d shadows", gated, atLastAnswer, s.Held)
	if ended(atLastAnswer) != 0 {
		t.Fatalf("shadows ended before the primaries were all answered (%v): the mirror held every one", atLastAnswer)
	}
	for _, o := range outs {
		if _, marked := o.Reply.Attachments["x-breeze-shadow"]; marked {
			t.Fatalf("v1 received the shadow mark on %s: %v", o.Call.Arg, o.Reply.Attachments)
		}
	}
	mirror.Release(t, "Greet")
	if err := proxy.WaitMetric(ctx, "the released shadows answered", "breeze_mirror_total", func(v float64) bool { return v == gated }, `result="answered"`); err != nil {
		t.Fatal(err)
	}

	// (2) The mirror's share.
	const n = 400
	outs = runCalls(ctx, c, n, 8, greets("share", nil))
	harness.ExactlyFrom(t, "share phase", harness.Served(t, outs), "primary")
	var m map[string]int
	if _, err := mirror.WaitStats(ctx, "the mirror executing every shadow sent", func(s harness.ProviderStats) bool {
		m = mirrorResults(t, proxy)
		return s.Executions["Greet"] == m["sent"] && m["answered"] == m["sent"]
	}); err != nil {
		t.Fatal(err)
	}
	shadows := m["sent"] - gated
	ok, lo, hi := harness.WithinSigmas(shadows, n, 0.25, 5)
	ps := primary.MustStats(t)
	t.Logf("share: %d calls answered by v1 (executed %d in all); v2 executed %d shadows of them (5σ bounds %.0f–%.0f); proxy counted %v",
		n, ps.Executions["Greet"], shadows, lo, hi, m)
	if !ok {
		t.Fatalf("v2 executed %d shadows of %d calls; want 25%% within 5σ (%.0f–%.0f)", shadows, n, lo, hi)
	}
	if ps.Executions["Greet"] != gated+n {
		t.Fatalf("v1 executed Greet %d times; want %d, one per call", ps.Executions["Greet"], gated+n)
	}

	// (3) A dead mirror fails no primary.
	mirror.Proc.KillAndWait(t)
	before := m
	const after = 200
	outs = runCalls(ctx, c, after, 8, greets("dead", nil))
	harness.ExactlyFrom(t, "dead mirror phase", harness.Served(t, outs), "primary")
	if err := proxy.WaitMetric(ctx, "every shadow sent to the dead mirror ended", "breeze_mirror_total", func(float64) bool {
		m = mirrorResults(t, proxy)
		return ended(m) == m["sent"]
	}); err != nil {
		t.Fatal(err)
	}
	failedShadows := m["reset"] + m["connect_failure"] + m["no_healthy_upstream"] - before["reset"] - before["connect_failure"] - before["no_healthy_upstream"]
	t.Logf("dead mirror: %d calls, all answered by v1; proxy counted %v", after, m)
	if failedShadows == 0 || m["answered"] != before["answered"] {
		t.Fatalf("after the kill: %d shadows counted failed, %d answered; want some failed, none answered (%v)", failedShadows, m["answered"]-before["answered"], m)
	}
}
