// Command breeze-report turns breeze-load's JSON lines into Markdown tables:
// one per group of runs, each figure with its ratio to a baseline (the
// relay) and a peer (Envoy's C++ proxy) measured in the same group at the
// same connection count. Repeated runs of one configuration are reduced to
// their median. -peer may list several labels (one per protocol): each
// group's ratios divide by the first of them that group has.
//
//	breeze-report -base relay -peer envoy-dubbo,envoy-thrift results.jsonl
//
// -compare BASE,CURRENT compares two labels instead (two builds of Breeze
// under the same load): one table per group, each figure of both and the
// ratio CURRENT ÷ BASE. -gobench LABEL=FILE (once per label) adds the same
// comparison of `go test -bench` output (medians over -count repeats):
//
//	breeze-report -compare base,current -gobench base=b.txt -gobench current=c.txt results.jsonl
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

type row struct {
	Group   string           `json:"group"`
	Kind    string           `json:"kind"`
	Label   string           `json:"label"`
	Conns   int              `json:"conns"`
	InFl    int              `json:"in_flight"`
	Payload int              `json:"payload"`
	Rate    float64          `json:"rate"`
	RPS     float64          `json:"rps"`
	P50     float64          `json:"p50_us"`
	P99     float64          `json:"p99_us"`
	P999    float64          `json:"p999_us"`
	Errors  int64            `json:"errors"`
	EKinds  map[string]int64 `json:"error_kinds"`
	CPU1k   float64          `json:"cpu_s_per_1k"`
	Reads   float64          `json:"reads_per_req"`
	Writes  float64          `json:"writes_per_req"`
	Opened  int              `json:"opened"`
	Before  int64            `json:"rss_before_bytes"`
	After   int64            `json:"rss_after_bytes"`
	PerConn float64          `json:"bytes_per_conn"`
	runs    int
}

func main() {
	base := flag.String("base", "relay", "label of the baseline the ratios divide by")
	peer := flag.String("peer", "envoy-dubbo", "label of the peer the ratios divide by; a comma-separated list: the first one a group has")
	compare := flag.String("compare", "", "BASE,CURRENT: compare two labels, figure by figure, instead of the tables with -base and -peer")
	medianRPS := flag.String("median-rps", "", "LABEL@GROUP: print the median req/s of LABEL's runs in GROUP and nothing else (make bench paces its half-load run with it)")
	var gobench gobenchFiles
	flag.Var(&gobench, "gobench", "LABEL=FILE: `go test -bench` output of LABEL, compared with -compare's labels (repeatable)")
	flag.Parse()
	var rows []row
	for _, name := range flag.Args() {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, "breeze-report:", err)
			os.Exit(1)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "" {
				continue
			}
			var r row
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				fmt.Fprintf(os.Stderr, "breeze-report: %s: %v\n", name, err)
				os.Exit(1)
			}
			rows = append(rows, r)
		}
		f.Close()
	}
	if *medianRPS != "" {
		label, group, ok := strings.Cut(*medianRPS, "@")
		var runs []row
		for _, r := range rows {
			if ok && r.Label == label && r.Group == group && r.Kind == "load" {
				runs = append(runs, r)
			}
		}
		if len(runs) == 0 {
			fmt.Fprintf(os.Stderr, "breeze-report: no runs of %q in group %q\n", label, group)
			os.Exit(1)
		}
		fmt.Printf("%.0f\n", merge(runs).RPS)
		return
	}
	if *compare == "" {
		report(os.Stdout, rows, *base, *peer)
		return
	}
	labels := strings.Split(*compare, ",")
	if len(labels) != 2 {
		fmt.Fprintln(os.Stderr, "breeze-report: -compare wants BASE,CURRENT")
		os.Exit(1)
	}
	benches := map[string][]benchLine{}
	for _, g := range gobench {
		f, err := os.Open(g.file)
		if err != nil {
			fmt.Fprintln(os.Stderr, "breeze-report:", err)
			os.Exit(1)
		}
		benches[g.label] = append(benches[g.label], parseGobench(f)...)
		f.Close()
	}
	compareReport(os.Stdout, rows, benches, labels[0], labels[1])
}

type key struct {
	group, kind, label string
	conns              int
}

// median merges repeated runs of one configuration.
func merge(rs []row) row {
	m := rs[0]
	m.runs = len(rs)
	med := func(get func(r row) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = get(r)
		}
		sort.Float64s(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	m.RPS = med(func(r row) float64 { return r.RPS })
	m.P50 = med(func(r row) float64 { return r.P50 })
	m.P99 = med(func(r row) float64 { return r.P99 })
	m.P999 = med(func(r row) float64 { return r.P999 })
	m.CPU1k = med(func(r row) float64 { return r.CPU1k })
	m.Reads = med(func(r row) float64 { return r.Reads })
	m.Writes = med(func(r row) float64 { return r.Writes })
	m.PerConn = med(func(r row) float64 { return r.PerConn })
	m.Before = int64(med(func(r row) float64 { return float64(r.Before) }))
	m.After = int64(med(func(r row) float64 { return float64(r.After) }))
	m.Errors = 0
	m.EKinds = map[string]int64{}
	for _, r := range rs {
		m.Errors += r.Errors
		for k, v := range r.EKinds {
			m.EKinds[k] += v
		}
	}
	return m
}

func report(w io.Writer, rows []row, base, peer string) {
	var order []key
	byKey := map[key][]row{}
	var groups []string
	seen := map[string]bool{}
	for _, r := range rows {
		k := key{r.Group, r.Kind, r.Label, r.Conns}
		if _, ok := byKey[k]; !ok {
			order = append(order, k)
		}
		byKey[k] = append(byKey[k], r)
		if !seen[r.Group] {
			seen[r.Group] = true
			groups = append(groups, r.Group)
		}
	}
	merged := map[key]row{}
	for k, rs := range byKey {
		merged[k] = merge(rs)
	}
	for _, g := range groups {
		var load, idle []key
		for _, k := range order {
			if k.group != g {
				continue
			}
			if k.kind == "idle" {
				idle = append(idle, k)
			} else {
				load = append(load, k)
			}
		}
		title := g
		if title == "" {
			title = "runs"
		}
		fmt.Fprintf(w, "### %s\n\n", title)
		load = addModel(load, merged)
		if len(load) > 0 {
			switch first := merged[load[0]]; {
			case first.Rate > 0:
				pacedTable(w, load, merged)
			case first.Payload >= largePayload:
				largeTable(w, load, merged, base, groupPeer(load, peer))
			default:
				loadTable(w, load, merged, base, groupPeer(load, peer))
			}
		}
		if len(idle) > 0 {
			idleTable(w, idle, merged)
		}
	}
}

// groupPeer returns the first label of the comma-separated peers that keys
// have (the first peer if none).
func groupPeer(keys []key, peers string) string {
	list := strings.Split(peers, ",")
	for _, p := range list {
		for _, k := range keys {
			if k.label == strings.TrimSpace(p) {
				return k.label
			}
		}
	}
	return strings.TrimSpace(list[0])
}

func ratio(a, b float64) string {
	if a <= 0 || b <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func cpu(v float64) string {
	if v < 0 {
		return "–"
	}
	return fmt.Sprintf("%.4f", v)
}

func loadTable(w io.Writer, keys []key, m map[key]row, base, peer string) {
	fmt.Fprintf(w, "| system | conns × in flight | req/s | p50 µs | p99 µs | p99.9 µs | errors | CPU s / 1k req | CPU ÷ %s | CPU ÷ %s | req/s ÷ %s | p99 ÷ %s | syscalls / req (r + w) | runs |\n", base, peer, peer, peer)
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	// Rows sorted by connections, keeping the run order within one count.
	sort.SliceStable(keys, func(i, j int) bool { return keys[i].conns < keys[j].conns })
	for _, k := range keys {
		r := m[k]
		b, hasB := m[key{k.group, k.kind, base, k.conns}]
		p, hasP := m[key{k.group, k.kind, peer, k.conns}]
		cb, cp, rp, lp := "–", "–", "–", "–"
		if hasB {
			cb = ratio(r.CPU1k, b.CPU1k)
		}
		if hasP {
			cp, rp, lp = ratio(r.CPU1k, p.CPU1k), ratio(r.RPS, p.RPS), ratio(r.P99, p.P99)
		}
		errs := errorCell(r)
		sys := "–"
		if r.Reads > 0 || r.Writes > 0 {
			sys = fmt.Sprintf("%.2f + %.2f", r.Reads, r.Writes)
		}
		rate := fmt.Sprintf("%.0f | %.0f | %.0f | %.0f", r.RPS, r.P50, r.P99, r.P999)
		if r.RPS <= 0 {
			// The in-Envoy harness: CPU per request only.
			rate = "– | – | – | –"
		}
		fmt.Fprintf(w, "| %s | %d × %d | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n",
			k.label, r.Conns, r.InFl, rate, errs, cpu(r.CPU1k), cb, cp, rp, lp, sys, r.runs)
	}
	fmt.Fprintln(w)
}

func idleTable(w io.Writer, keys []key, m map[key]row) {
	fmt.Fprintln(w, "| system | idle connections | RSS before MiB | RSS after MiB | KiB per connection | errors | runs |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|")
	for _, k := range keys {
		r := m[k]
		var errs int64
		for _, v := range r.EKinds {
			errs += v
		}
		fmt.Fprintf(w, "| %s | %d | %.1f | %.1f | %.1f | %d | %d |\n", k.label, r.Opened,
			float64(r.Before)/(1<<20), float64(r.After)/(1<<20), r.PerConn/1024, errs, r.runs)
	}
	fmt.Fprintln(w)
}

// largePayload is where a group's table turns to bytes: MB/s and CPU per
// MB say more than requests per second for 64 KiB and 1 MiB messages.
const largePayload = 64 << 10

// largeTable: throughput in MB/s each way (the echo answers the same
// bytes) and CPU per MB, next to the relay and the peer.
func largeTable(w io.Writer, keys []key, m map[key]row, base, peer string) {
	fmt.Fprintf(w, "| system | conns × in flight | payload | req/s | MB/s each way | p50 ms | p99 ms | errors | CPU ms / MB | CPU ÷ %s | CPU ÷ %s | MB/s ÷ %s | runs |\n", base, peer, peer)
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, k := range keys {
		r := m[k]
		b, hasB := m[key{k.group, k.kind, base, k.conns}]
		p, hasP := m[key{k.group, k.kind, peer, k.conns}]
		cb, cp, tp := "–", "–", "–"
		if hasB {
			cb = ratio(r.CPU1k, b.CPU1k)
		}
		if hasP {
			cp, tp = ratio(r.CPU1k, p.CPU1k), ratio(r.RPS, p.RPS)
		}
		mb := float64(r.Payload) / 1e6
		perMB := "–"
		if r.CPU1k >= 0 {
			// CPU s per 1,000 requests → ms per MB carried each way.
			perMB = fmt.Sprintf("%.3f", r.CPU1k/mb)
		}
		fmt.Fprintf(w, "| %s | %d × %d | %d KiB | %.0f | %.1f | %.2f | %.2f | %s | %s | %s | %s | %s | %d |\n",
			k.label, r.Conns, r.InFl, r.Payload>>10, r.RPS, r.RPS*mb, r.P50/1e3, r.P99/1e3, errorCell(r), perMB, cb, cp, tp, r.runs)
	}
	fmt.Fprintln(w)
}

// direct is the label of the runs without a proxy: what a paced group's
// added latency is measured from.
const direct = "echo-direct"

// pacedTable: every system at the same request rate (open loop up to the
// in-flight limit), latency added over the echo server alone.
func pacedTable(w io.Writer, keys []key, m map[key]row) {
	fmt.Fprintln(w, "| system | conns × in flight | paced at req/s | req/s | p50 µs | p99 µs | p99.9 µs | p50 added µs | p99 added µs | errors | CPU s / 1k req | runs |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	sort.SliceStable(keys, func(i, j int) bool { return keys[i].conns < keys[j].conns })
	for _, k := range keys {
		r := m[k]
		added50, added99 := "–", "–"
		if d, ok := m[key{k.group, k.kind, direct, k.conns}]; ok && k.label != direct {
			added50, added99 = fmt.Sprintf("%+.0f", r.P50-d.P50), fmt.Sprintf("%+.0f", r.P99-d.P99)
		}
		fmt.Fprintf(w, "| %s | %d × %d | %.0f | %.0f | %.0f | %.0f | %.0f | %s | %s | %s | %s | %d |\n",
			k.label, r.Conns, r.InFl, r.Rate, r.RPS, r.P50, r.P99, r.P999, added50, added99, errorCell(r), cpu(r.CPU1k), r.runs)
	}
	fmt.Fprintln(w)
}

// errorCell: the count, and by kind when there are any.
func errorCell(r row) string {
	errs := fmt.Sprint(r.Errors)
	if r.Errors > 0 {
		var parts []string
		for k, v := range r.EKinds {
			parts = append(parts, fmt.Sprintf("%s %d", k, v))
		}
		sort.Strings(parts)
		errs += " (" + strings.Join(parts, ", ") + ")"
	}
	return errs
}

// The in-Envoy model's parts (bench/README.md): stock Envoy's tcp_proxy on
// the same traffic, the plugin's Go side driven as Envoy drives it, and the
// priced C++ half of the Go filter. Labels as scripts/bench.sh and
// bench/inenvoy write them.
const (
	modelTCP     = "envoy-tcp"
	modelHarness = "breeze in-Envoy harness (Go side)"
	modelCxx     = "C++ half of the Go filter (priced, testdata/cxxhalf.cc)"
	modelLabel   = "breeze in Envoy, model = envoy-tcp + harness + C++ half"
)

// addModel adds the model's row (CPU per request only: the sum of its
// parts' medians) after its last part, where a group has all three at one
// connection count, so that the table divides it by the peer like the
// measured rows.
func addModel(keys []key, m map[key]row) []key {
	out := keys
	for _, k := range keys {
		if k.label != modelCxx {
			continue
		}
		tcp, ok1 := m[key{k.group, k.kind, modelTCP, k.conns}]
		h, ok2 := m[key{k.group, k.kind, modelHarness, k.conns}]
		if !ok1 || !ok2 || tcp.CPU1k < 0 || h.CPU1k < 0 {
			continue
		}
		c := m[k]
		model := key{k.group, k.kind, modelLabel, k.conns}
		m[model] = row{Group: k.group, Kind: k.kind, Label: modelLabel, Conns: c.Conns, InFl: c.InFl, Payload: c.Payload,
			CPU1k: tcp.CPU1k + h.CPU1k + c.CPU1k, runs: min(tcp.runs, h.runs, c.runs)}
		out = append(out, model)
	}
	return out
}
