package harness

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// SumMetric returns the sum of the samples of the Prometheus metric name in
// text (the exposition format) whose labels include every one of labels,
// each written `key="value"`; 0 when there is none.
func SumMetric(text, name string, labels ...string) float64 {
	sum := 0.0
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		matched := true
		for _, l := range labels {
			if !strings.Contains(line[:i], l) {
				matched = false
				break
			}
		}
		if !matched {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// metricsWithin bounds one read of /metrics.
const metricsWithin = 5 * time.Second

// Metric reads the proxy's /metrics once and returns SumMetric of it; it
// fails t if /metrics cannot be read.
func (p *Proxy) Metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), metricsWithin)
	defer cancel()
	text, err := p.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return SumMetric(text, name, labels...)
}

// WaitMetric polls the proxy's /metrics until cond holds for the metric's
// value (SumMetric) or ctx ends; what says what the caller waits for.
func (p *Proxy) WaitMetric(ctx context.Context, what, name string, cond func(float64) bool, labels ...string) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		text, err := p.Metrics(ctx)
		if err == nil && cond(SumMetric(text, name, labels...)) {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s (%s%v = %v): %w; its samples:\n%s", what, name, labels, SumMetric(text, name, labels...), ctx.Err(), samples(text, name))
		}
	}
}

// samples returns the lines of text that are samples of the metric name (or
// of its histogram series).
func samples(text, name string) string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, name) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
