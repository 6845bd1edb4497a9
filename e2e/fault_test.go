package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/harness"
)

// faultConfig: calls carrying the attachment test-fault: yes are delayed
// (30 %, 100ms) and aborted with Dubbo status 31, a timeout (20 %); the
// others are left alone.
const faultConfig = `
admin_address: "{{.Admin}}"
listeners:
- name: dubbo
  address: "{{.Listen}}"
  proxy:
    stat_prefix: e2e
    codec: dubbo
    filters:
    - name: fault
      typed_config:
        "@type": type.googleapis.com/breeze.filters.fault.v1.Fault
        match: [{key: test-fault, exact: "yes"}]
        delay: {fixed_delay: 0.1s, percentage: {value: 30}}
        abort: {status: 31, percentage: {value: 20}}
    route_config:
      routes:
      - route: {cluster: greeter}
    clusters:
    - name: greeter
      endpoints: [{address: 127.0.0.1, port: {{port "faulty"}}}]
`

// TestFaultInjection: through a real dubbo-go client, the share of calls
// aborted and delayed is within 5σ of the configured percentage, the
// aborts reach the caller as the configured error, and calls without the
// attachment are never touched.
func TestFaultInjection(t *testing.T) {
	harness.BreezeBin(t)
	p := harness.StartProvider(t, harness.ProviderSpec{Name: "faulty"})
	proxy := harness.StartProxy(t, faultConfig, ports(p))
	c := newClient(t, proxy.Addr, harness.ClientSpec{Connections: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const faulty, clean = 600, 200
	calls := func(n int, testFault string) []harness.Outcome[harness.CallSpec] {
		return c.RunCalls(ctx, n, 16, 10*time.Second, func(i int) harness.CallSpec {
			return harness.CallSpec{Method: "Greet", Arg: fmt.Sprint("call-", i), Attachments: map[string]string{"test-fault": testFault}}
		})
	}
	aborted := 0
	for _, o := range calls(faulty, "yes") {
		var ce *harness.CallError
		switch {
		case o.Err == nil:
		case errors.As(o.Err, &ce) && strings.Contains(ce.Msg, "upstream timeout") && strings.Contains(ce.Msg, "fault injected: abort"):
			aborted++
		default:
			t.Errorf("%v, want a reply or the injected abort", o.Err)
		}
	}
	delayed := int(proxy.Metric(t, "breeze_faults_injected_total", `fault="delay"`))
	for _, c := range []struct {
		what  string
		count int
		p     float64
	}{{"aborted", aborted, 0.20}, {"delayed", delayed, 0.30}} {
		ok, lo, hi := harness.WithinSigmas(c.count, faulty, c.p, 5)
		if !ok {
			t.Errorf("%s: %d of %d calls with test-fault: yes, want %.0f–%.0f (%.0f %% ± 5σ)", c.what, c.count, faulty, lo, hi, c.p*100)
		}
		t.Logf("%s: %d of %d calls with test-fault: yes (5σ bounds %.0f–%.0f)", c.what, c.count, faulty, lo, hi)
	}
	for _, o := range calls(clean, "no") {
		if o.Err != nil {
			t.Errorf("a call with test-fault: no failed: %v", o.Err)
		}
	}
	if n := int(proxy.Metric(t, "breeze_faults_injected_total", `fault="delay"`)); n != delayed {
		t.Errorf("%d calls with test-fault: no were delayed, want none", n-delayed)
	}
	t.Logf("%d calls with test-fault: no: none delayed or aborted", clean)
	if n := proxy.Metric(t, "breeze_faults_injected_total", `fault="abort"`); int(n) != aborted {
		t.Errorf(`breeze_faults_injected_total{fault="abort"} = %v, but %d calls were aborted`, n, aborted)
	}
	if n := proxy.Metric(t, "breeze_local_replies_total", `reason="timeout"`); int(n) != aborted {
		t.Errorf(`breeze_local_replies_total{reason="timeout"} = %v, want %d`, n, aborted)
	}
}
