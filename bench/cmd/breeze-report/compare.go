package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// compareReport prints, for every group that has both labels, each figure
// of base and current and the ratio current ÷ base; then the Go benchmark
// figures of both labels the same way.
func compareReport(w io.Writer, rows []row, benches map[string][]benchLine, base, current string) {
	var groups []string
	byGroup := map[string]map[string][]row{}
	for _, r := range rows {
		if r.Kind == "idle" {
			continue
		}
		if byGroup[r.Group] == nil {
			byGroup[r.Group] = map[string][]row{}
			groups = append(groups, r.Group)
		}
		byGroup[r.Group][r.Label] = append(byGroup[r.Group][r.Label], r)
	}
	for _, g := range groups {
		bs, cs := byGroup[g][base], byGroup[g][current]
		if len(bs) == 0 || len(cs) == 0 {
			continue
		}
		b, c := merge(bs), merge(cs)
		fmt.Fprintf(w, "### %s\n\n", g)
		fmt.Fprintf(w, "| | %s | %s | %s ÷ %s |\n|---|--:|--:|--:|\n", base, current, current, base)
		line := func(name, format string, bv, cv float64) {
			fmt.Fprintf(w, "| %s | "+format+" | "+format+" | %s |\n", name, bv, cv, ratio(cv, bv))
		}
		line("CPU s / 1k req", "%.4f", b.CPU1k, c.CPU1k)
		line("req/s", "%.0f", b.RPS, c.RPS)
		line("p50 µs", "%.0f", b.P50, c.P50)
		line("p99 µs", "%.0f", b.P99, c.P99)
		line("p99.9 µs", "%.0f", b.P999, c.P999)
		line("syscalls / req (r + w)", "%.2f", b.Reads+b.Writes, c.Reads+c.Writes)
		fmt.Fprintf(w, "| errors | %s | %s | |\n", errorText(b), errorText(c))
		fmt.Fprintf(w, "| runs | %d | %d | |\n\n", b.runs, c.runs)
	}
	if len(benches[base]) == 0 && len(benches[current]) == 0 {
		return
	}
	fmt.Fprintf(w, "### Go benchmarks (one op = one request; whole process: client, proxy, echo servers; medians of the runs)\n\n")
	fmt.Fprintf(w, "| benchmark | per request | %s | %s | %s ÷ %s | runs |\n|---|---|--:|--:|--:|--:|\n", base, current, current, base)
	bm, cm := medians(benches[base]), medians(benches[current])
	var names []string
	seen := map[string]bool{}
	for _, l := range append(append([]benchLine{}, benches[base]...), benches[current]...) {
		if !seen[l.name] {
			seen[l.name] = true
			names = append(names, l.name)
		}
	}
	for _, n := range names {
		for _, u := range units(bm[n], cm[n]) {
			bv, bok := bm[n].values[u]
			cv, cok := cm[n].values[u]
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %d / %d |\n", n, u, num(bv, bok), num(cv, cok),
				ratioOf(bv, cv, bok && cok), bm[n].runs, cm[n].runs)
		}
	}
	fmt.Fprintln(w)
}

func errorText(r row) string {
	s := fmt.Sprint(r.Errors)
	if r.Errors > 0 {
		var parts []string
		for k, v := range r.EKinds {
			parts = append(parts, fmt.Sprintf("%s %d", k, v))
		}
		sort.Strings(parts)
		s += " (" + strings.Join(parts, ", ") + ")"
	}
	return s
}

func num(v float64, ok bool) string {
	if !ok {
		return "–"
	}
	if v >= 100 || v == float64(int64(v)) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// ratioOf is current ÷ base; 1.00 when both are zero (no allocation either side).
func ratioOf(b, c float64, ok bool) string {
	if ok && b == 0 && c == 0 {
		return "1.00"
	}
	if !ok {
		return "–"
	}
	return ratio(c, b)
}

// A benchLine is one line of `go test -bench` output.
type benchLine struct {
	name   string // without the -GOMAXPROCS suffix
	values map[string]float64
}

var benchRE = regexp.MustCompile(`^(Benchmark\S*?)(-\d+)?\s+(\d+)\s+(.*)$`)

func parseGobench(r io.Reader) []benchLine {
	var out []benchLine
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m := benchRE.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		f := strings.Fields(m[4])
		l := benchLine{name: m[1], values: map[string]float64{}}
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			l.values[f[i+1]] = v
		}
		if len(l.values) > 0 {
			out = append(out, l)
		}
	}
	return out
}

type benchMedian struct {
	values map[string]float64
	runs   int
}

func medians(lines []benchLine) map[string]benchMedian {
	all := map[string][]benchLine{}
	for _, l := range lines {
		all[l.name] = append(all[l.name], l)
	}
	out := map[string]benchMedian{}
	for n, ls := range all {
		m := benchMedian{values: map[string]float64{}, runs: len(ls)}
		for _, u := range unitOrder(ls) {
			var v []float64
			for _, l := range ls {
				if x, ok := l.values[u]; ok {
					v = append(v, x)
				}
			}
			sort.Float64s(v)
			if len(v)%2 == 1 {
				m.values[u] = v[len(v)/2]
			} else {
				m.values[u] = (v[len(v)/2-1] + v[len(v)/2]) / 2
			}
		}
		out[n] = m
	}
	return out
}

// unitOrder: allocations first, then bytes, CPU and wall time, then any other.
func unitOrder(ls []benchLine) []string {
	rank := map[string]int{"allocs/op": 0, "B/op": 1, "cpu-ns/op": 2, "ns/op": 3}
	seen := map[string]bool{}
	var us []string
	for _, l := range ls {
		for u := range l.values {
			if !seen[u] {
				seen[u] = true
				us = append(us, u)
			}
		}
	}
	sort.Slice(us, func(i, j int) bool {
		ri, iok := rank[us[i]]
		rj, jok := rank[us[j]]
		if iok != jok {
			return iok
		}
		if iok {
			return ri < rj
		}
		return us[i] < us[j]
	})
	return us
}

func units(a, b benchMedian) []string {
	var ls []benchLine
	if a.values != nil {
		ls = append(ls, benchLine{values: a.values})
	}
	if b.values != nil {
		ls = append(ls, benchLine{values: b.values})
	}
	return unitOrder(ls)
}

// gobenchFiles is the repeatable -gobench LABEL=FILE flag.
type gobenchFiles []struct{ label, file string }

func (g *gobenchFiles) String() string { return fmt.Sprint(*g) }

func (g *gobenchFiles) Set(s string) error {
	label, file, ok := strings.Cut(s, "=")
	if !ok || label == "" || file == "" {
		return fmt.Errorf("want LABEL=FILE, got %q", s)
	}
	*g = append(*g, struct{ label, file string }{label, file})
	return nil
}
