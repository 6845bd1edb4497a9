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

func TestCompare(t *testing.T) {
	rows := []row{
		{Group: "main (dubbo)", Kind: "load", Label: "base", Conns: 8, InFl: 4, RPS: 1000, P50: 50, P99: 100, CPU1k: 0.02, Reads: 1, Writes: 1},
		{Group: "main (dubbo)", Kind: "load", Label: "current", Conns: 8, InFl: 4, RPS: 1200, P50: 40, P99: 80, CPU1k: 0.01, Reads: 1, Writes: 0.5},
		{Group: "main (dubbo)", Kind: "load", Label: "base", Conns: 8, InFl: 4, RPS: 800, P50: 70, P99: 300, CPU1k: 0.04, Reads: 1, Writes: 1},
		{Group: "main (dubbo)", Kind: "load", Label: "current", Conns: 8, InFl: 4, RPS: 1200, P50: 40, P99: 80, CPU1k: 0.01, Reads: 1, Writes: 0.5, Errors: 1, EKinds: map[string]int64{"status_60": 1}},
		{Group: "other", Kind: "load", Label: "relay", Conns: 8, InFl: 4, RPS: 1},
	}
	base := parseGobench(strings.NewReader(`goos: linux
BenchmarkProxyDubbo/direct-2   	    2000	      3848 ns/op	      3892 cpu-ns/op	       0 B/op	       0 allocs/op
BenchmarkProxyDubbo/breeze-2   	    2000	     27447 ns/op	     28798 cpu-ns/op	   10335 B/op	      12 allocs/op
BenchmarkProxyDubbo/breeze-2   	    2000	     27447 ns/op	     28798 cpu-ns/op	   10335 B/op	      14 allocs/op
PASS
`))
	current := parseGobench(strings.NewReader(`BenchmarkProxyDubbo/direct-2   	    2000	      3848 ns/op	      3892 cpu-ns/op	       0 B/op	       0 allocs/op
BenchmarkProxyDubbo/breeze-2   	    2000	     27447 ns/op	     28798 cpu-ns/op	   5000 B/op	      6.5 allocs/op
`))
	var b strings.Builder
	compareReport(&b, rows, map[string][]benchLine{"base": base, "current": current}, "base", "current")
	out := b.String()
	for _, want := range []string{
		"### main (dubbo)",
		"| | base | current | current ÷ base |",
		"| CPU s / 1k req | 0.0300 | 0.0100 | 0.33 |",
		"| req/s | 900 | 1200 | 1.33 |",
		"| p99 µs | 200 | 80 | 0.40 |",
		"| syscalls / req (r + w) | 2.00 | 1.50 | 0.75 |",
		"| errors | 0 | 1 (status_60 1) | |",
		"| runs | 2 | 2 | |",
		"| BenchmarkProxyDubbo/direct | allocs/op | 0 | 0 | 1.00 | 1 / 1 |",
		"| BenchmarkProxyDubbo/breeze | allocs/op | 13 | 6.50 | 0.50 | 2 / 1 |",
		"| BenchmarkProxyDubbo/breeze | B/op | 10335 | 5000 | 0.48 | 2 / 1 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("comparison lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "### other") {
		t.Errorf("a group without both labels is compared:\n%s", out)
	}
}

func TestPacedAndLargeTables(t *testing.T) {
	rows := []row{
		{Group: "half", Kind: "load", Label: "echo-direct", Conns: 64, InFl: 4, Rate: 20000, RPS: 19990, P50: 40, P99: 90, CPU1k: 0.005},
		{Group: "half", Kind: "load", Label: "breeze", Conns: 64, InFl: 4, Rate: 20000, RPS: 19980, P50: 95, P99: 210, CPU1k: 0.02},
		{Group: "large", Kind: "load", Label: "relay", Conns: 8, InFl: 1, Payload: 1 << 20, RPS: 200, P50: 30000, P99: 60000, CPU1k: 1},
		{Group: "large", Kind: "load", Label: "breeze", Conns: 8, InFl: 1, Payload: 1 << 20, RPS: 100, P50: 70000, P99: 90000, CPU1k: 4},
		{Group: "large", Kind: "load", Label: "envoy-dubbo", Conns: 8, InFl: 1, Payload: 1 << 20, RPS: 50, P50: 150000, P99: 200000, CPU1k: 8},
	}
	var b strings.Builder
	report(&b, rows, "relay", "envoy-dubbo")
	out := b.String()
	for _, want := range []string{
		"| p50 added µs | p99 added µs |",
		// Added latency is measured from echo-direct in the same group.
		"| breeze | 64 × 4 | 20000 | 19980 | 95 | 210 | 0 | +55 | +120 | 0 | 0.0200 | 1 |",
		"| echo-direct | 64 × 4 | 20000 | 19990 | 40 | 90 | 0 | – | – | 0 | 0.0050 | 1 |",
		// 1 MiB = 1.048576 MB: 100 req/s is 104.9 MB/s; 4 CPU s per 1k
		// requests is 4 ms per request, 3.815 ms per MB.
		"| breeze | 8 × 1 | 1024 KiB | 100 | 104.9 | 70.00 | 90.00 | 0 | 3.815 | 4.00 | 0.50 | 2.00 | 1 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestModelRow(t *testing.T) {
	rows := []row{
		{Group: "main", Kind: "load", Label: "envoy-dubbo", Conns: 64, InFl: 4, RPS: 30000, CPU1k: 0.016},
		{Group: "main", Kind: "load", Label: "envoy-tcp", Conns: 64, InFl: 4, RPS: 40000, CPU1k: 0.006},
		{Group: "main", Kind: "load", Label: modelHarness, Conns: 64, InFl: 4, CPU1k: 0.005},
		{Group: "main", Kind: "load", Label: modelCxx, Conns: 64, InFl: 4, CPU1k: 0.001},
		{Group: "main", Kind: "load", Label: modelCxx, Conns: 64, InFl: 4, CPU1k: 0.003},
	}
	var b strings.Builder
	report(&b, rows, "relay", "envoy-dubbo")
	out := b.String()
	// 0.006 + 0.005 + median(0.001, 0.003) = 0.013; ÷ envoy-dubbo 0.81.
	want := "| " + modelLabel + " | 64 × 4 | – | – | – | – | 0 | 0.0130 | – | 0.81 | – | – | – | 1 |"
	if !strings.Contains(out, want) {
		t.Errorf("report lacks %q:\n%s", want, out)
	}
}
