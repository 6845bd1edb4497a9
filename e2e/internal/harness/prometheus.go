package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// PrometheusBin is the Prometheus server `make test-deps` installs (Debian's
// prometheus package). A test that needs it fails when it is missing: no
// test skips for a missing tool.
func PrometheusBin(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("no prometheus server on PATH (%v): `make test-deps` installs Debian's", err)
	}
	return bin
}

// ScrapeTarget is one job of the generated prometheus.yml.
type ScrapeTarget struct {
	Job string
	// Addr is host:port; Path the metrics path ("/metrics" when empty).
	Addr, Path string
}

// Prometheus is a running Prometheus server scraping the targets it was
// started with.
type Prometheus struct {
	// Addr is its HTTP address (the query API).
	Addr string
	// Interval is the scrape interval of every job.
	Interval time.Duration
	Proc     *Proc
	// Config is the generated prometheus.yml.
	Config string
}

// StartPrometheus starts a Prometheus server on a free loopback port with a
// generated config scraping targets every interval, its storage in a
// temporary directory, and waits until it answers /-/ready. The targets need
// not be up yet: Prometheus records up=0 until they are.
//
// Prometheus 2.x hands new targets to its scrape loops up to 5 s after it
// starts (its discovery manager sends updates at most every 5 s): start it
// before the processes it scrapes, so that this overlaps their start.
func StartPrometheus(t testing.TB, interval time.Duration, targets ...ScrapeTarget) *Prometheus {
	t.Helper()
	bin := PrometheusBin(t)
	dir := t.TempDir()
	var cfg strings.Builder
	// scrape_timeout may not exceed scrape_interval (Prometheus refuses the
	// config otherwise); its default is 10 s.
	fmt.Fprintf(&cfg, "global:\n  scrape_interval: %s\n  scrape_timeout: %s\n  evaluation_interval: %s\nscrape_configs:\n",
		promDuration(interval), promDuration(interval), promDuration(interval))
	for _, tg := range targets {
		path := tg.Path
		if path == "" {
			path = "/metrics"
		}
		fmt.Fprintf(&cfg, "  - job_name: %q\n    metrics_path: %q\n    static_configs:\n      - targets: [%q]\n", tg.Job, path, tg.Addr)
	}
	file := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(file, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	for attempt := 1; ; attempt++ {
		addr := Addr(FreePort(t))
		p := Start(t, "prometheus", bin,
			"--config.file="+file,
			"--storage.tsdb.path="+filepath.Join(dir, fmt.Sprintf("data%d", attempt)),
			"--web.listen-address="+addr,
			"--log.level=warn")
		err := waitReady(addr, p, 30*time.Second)
		// A port free a moment ago may have been taken meanwhile.
		if err != nil && attempt < 3 && strings.Contains(p.Output(), "address already in use") {
			t.Logf("prometheus: %s taken meanwhile; trying another port", addr)
			continue
		}
		if err != nil {
			t.Fatalf("prometheus: %v\nconfig:\n%s\noutput:\n%s", err, cfg.String(), p.Output())
		}
		return &Prometheus{Addr: addr, Interval: interval, Proc: p, Config: cfg.String()}
	}
}

// promDuration writes d as Prometheus durations are written ("1500ms", "2s").
func promDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}

// waitReady polls GET /-/ready until it answers 200, p exits, or within
// passes.
func waitReady(addr string, p *Proc, within time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/-/ready", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /-/ready: %s", resp.Status)
		}
		last = err
		select {
		case <-tick.C:
		case <-p.Done():
			return fmt.Errorf("exited before it was ready (%v)", p.err)
		case <-ctx.Done():
			return fmt.Errorf("not ready within %s: %v", within, last)
		}
	}
}

// Sample is one element of an instant vector.
type Sample struct {
	Labels map[string]string
	Value  float64
	// Time is the evaluation time (an instant query's), or the sample's own
	// time for timestamp().
	Time time.Time
}

// String writes the sample as PromQL results read: {a="x", b="y"} 3.
func (s Sample) String() string {
	keys := make([]string, 0, len(s.Labels))
	for k := range s.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%q", k, s.Labels[k])
	}
	return "{" + strings.Join(parts, ", ") + "} " + strconv.FormatFloat(s.Value, 'g', -1, 64)
}

// Vector is an instant query's result.
type Vector []Sample

// String writes one sample per line, sorted, for failure messages.
func (v Vector) String() string {
	lines := make([]string, len(v))
	for i, s := range v {
		lines[i] = s.String()
	}
	sort.Strings(lines)
	if len(lines) == 0 {
		return "(empty)"
	}
	return strings.Join(lines, "\n")
}

// Query evaluates expr at time at (the server's now when at is zero)
// through the HTTP API (GET /api/v1/query). A scalar result comes back as a
// one-sample vector without labels.
func (p *Prometheus) Query(ctx context.Context, expr string, at time.Time) (Vector, error) {
	q := url.Values{"query": {expr}}
	if !at.IsZero() {
		q.Set("time", strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.Addr+"/api/v1/query?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", expr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", expr, err)
	}
	var r struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
		Data      struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("query %s: %s: %w: %.200s", expr, resp.Status, err, body)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %s: %s: %s", expr, r.ErrorType, r.Error)
	}
	switch r.Data.ResultType {
	case "vector":
		var raw []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		if err := json.Unmarshal(r.Data.Result, &raw); err != nil {
			return nil, fmt.Errorf("query %s: %w", expr, err)
		}
		v := make(Vector, len(raw))
		for i, s := range raw {
			ts, val, err := point(s.Value)
			if err != nil {
				return nil, fmt.Errorf("query %s: %w", expr, err)
			}
			v[i] = Sample{Labels: s.Metric, Value: val, Time: ts}
		}
		return v, nil
	case "scalar":
		var raw [2]any
		if err := json.Unmarshal(r.Data.Result, &raw); err != nil {
			return nil, fmt.Errorf("query %s: %w", expr, err)
		}
		ts, val, err := point(raw)
		if err != nil {
			return nil, fmt.Errorf("query %s: %w", expr, err)
		}
		return Vector{{Labels: map[string]string{}, Value: val, Time: ts}}, nil
	}
	return nil, fmt.Errorf("query %s: result type %q, want vector or scalar", expr, r.Data.ResultType)
}

// point decodes the API's [seconds, "value"] pair.
func point(p [2]any) (time.Time, float64, error) {
	secs, ok := p[0].(float64)
	if !ok {
		return time.Time{}, 0, fmt.Errorf("sample time %v", p[0])
	}
	s, ok := p[1].(string)
	if !ok {
		return time.Time{}, 0, fmt.Errorf("sample value %v", p[1])
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return time.Time{}, 0, fmt.Errorf("sample value %q: %w", s, err)
	}
	return time.UnixMilli(int64(math.Round(secs * 1000))), v, nil
}

// LastScrape is the time of the latest scrape of the target at addr (the
// timestamp of its newest `up` sample) if that scrape succeeded; ok is false
// while the target has not been scraped, or its latest scrape failed. One
// query: both halves see the same newest sample.
func (p *Prometheus) LastScrape(ctx context.Context, addr string) (at time.Time, ok bool, err error) {
	v, err := p.Query(ctx, fmt.Sprintf(`timestamp(up{instance=%q}) and on () (up{instance=%q} == 1)`, addr, addr), time.Time{})
	if err != nil || len(v) == 0 {
		return time.Time{}, false, err
	}
	// timestamp() returns the sample's time in seconds, to the millisecond.
	return time.UnixMilli(int64(math.Round(v[0].Value * 1000))), true, nil
}

// WaitScrape waits for a successful scrape of the target at addr that
// started after after, and returns its time. Prometheus stamps a scrape's
// samples with the time the scrape began: whatever the target had counted
// by after is in it.
func (p *Prometheus) WaitScrape(ctx context.Context, addr string, after time.Time) (time.Time, error) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var (
		last    time.Time
		lastErr error
	)
	for {
		at, ok, err := p.LastScrape(ctx, addr)
		lastErr = err
		if ok {
			last = at
			if at.After(after) {
				return at, nil
			}
		}
		select {
		case <-tick.C:
		case <-p.Proc.Done():
			return time.Time{}, fmt.Errorf("prometheus exited while waiting for a scrape of %s", addr)
		case <-ctx.Done():
			what := "never scraped successfully"
			if !last.IsZero() {
				what = "last successful scrape " + last.Format(time.StampMilli)
			}
			if lastErr != nil {
				what += fmt.Sprintf(" (last query: %v)", lastErr)
			}
			return time.Time{}, fmt.Errorf("waiting for a scrape of %s after %s: %w; %s", addr, after.Format(time.StampMilli), ctx.Err(), what)
		}
	}
}
