package main

import (
	"strings"
	"testing"
)

func TestReport(t *testing.T) {
	rows := []row{
		{Group: "main", Kind: "load", Label: "relay", Conns: 8, InFl: 4, RPS: 1000, P99: 100, CPU1k: 0.01, Reads: 2, Writes: 1.5},
		{Group: "main", Kind: "load", Label: "breeze", Conns: 8, InFl: 4, RPS: 800, P99: 200, CPU1k: 0.03},
		{Group: "main", Kind: "load", Label: "breeze", Conns: 8, InFl: 4, RPS: 600, P99: 400, CPU1k: 0.05, Errors: 2, EKinds: map[string]int64{"status_60": 2}},
		{Group: "main", Kind: "load", Label: "envoy-dubbo", Conns: 8, InFl: 4, RPS: 500, P99: 300, CPU1k: 0.08},
		{Group: "thrift main", Kind: "load", Label: "breeze", Conns: 8, InFl: 4, RPS: 900, P99: 100, CPU1k: 0.02},
		{Group: "thrift main", Kind: "load", Label: "envoy-thrift", Conns: 8, InFl: 4, RPS: 300, P99: 400, CPU1k: 0.04},
		{Group: "idle", Kind: "idle", Label: "breeze", Opened: 100, Before: 10 << 20, After: 12 << 20, PerConn: 20 << 10},
	}
	var b strings.Builder
	report(&b, rows, "relay", "envoy-dubbo,envoy-thrift")
	out := b.String()
	for _, want := range []string{
		"### main",
		// breeze: medians 700 req/s, p99 300, CPU 0.04: ÷relay 4.00, ÷envoy 0.50, req/s ÷envoy 1.40, p99 ÷envoy 1.00, 2 runs
		"| breeze | 8 × 4 | 700 | 0 | 300 | 0 | 2 (status_60 2) | 0.0400 | 4.00 | 0.50 | 1.40 | 1.00 | – | 2 |",
		"| relay | 8 × 4 | 1000 | 0 | 100 | 0 | 0 | 0.0100 | 1.00 | 0.12 | 2.00 | 0.33 | 2.00 + 1.50 | 1 |",
		"### thrift main",
		"| CPU ÷ relay | CPU ÷ envoy-thrift | req/s ÷ envoy-thrift |",
		"| breeze | 8 × 4 | 900 | 0 | 100 | 0 | 0 | 0.0200 | – | 0.50 | 3.00 | 0.25 | – | 1 |",
		"### idle",
		"| breeze | 100 | 10.0 | 12.0 | 20.0 | 0 | 1 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
