package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"
)

// ProviderStats is what a provider counted (GET /stats of its control).
type ProviderStats struct {
	// Executions counts the calls that reached each method.
	Executions map[string]int `json:"executions"`
	// Args counts them by method and argument: 2 is a call that ran twice.
	Args map[string]map[string]int `json:"args"`
	// Held is the number of calls waiting at a gate now; HeldArgs their
	// arguments, by method.
	Held     int                 `json:"held"`
	HeldArgs map[string][]string `json:"held_args"`
}

// controlWithin bounds one request to a provider's control.
const controlWithin = 5 * time.Second

func (p *Provider) control(ctx context.Context, method, path string, q url.Values) ([]byte, error) {
	u := "http://" + p.Control + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("provider %s control: %w", p.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("provider %s control %s %s: %s: %s", p.Name, method, path, resp.Status, b)
	}
	return b, err
}

func (p *Provider) post(t testing.TB, path string, q url.Values) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), controlWithin)
	defer cancel()
	if _, err := p.control(ctx, http.MethodPost, path, q); err != nil {
		t.Fatal(err)
	}
}

// Gate makes the provider hold every call of method that reaches it from
// now on, until Release.
func (p *Provider) Gate(t testing.TB, method string) {
	t.Helper()
	p.post(t, "/gate", url.Values{"method": {method}})
}

// GateFirst makes the provider hold the next n calls of method that reach
// it, until Release; the calls after them run at once.
func (p *Provider) GateFirst(t testing.TB, method string, n int) {
	t.Helper()
	p.post(t, "/gate", url.Values{"method": {method}, "max": {strconv.Itoa(n)}})
}

// Release lets the held calls of method run, and later ones at once.
func (p *Provider) Release(t testing.TB, method string) {
	t.Helper()
	p.post(t, "/release", url.Values{"method": {method}})
}

// Fail makes method's executions follow pattern, cycled, one character per
// execution in the order they reach the provider: '.' answers normally,
// 'E' with the Dubbo response status status, 'X' with a plain error
// (dubbo-go: an exception in a status-20 response), 'P' panics. "" answers
// normally again. "EEE..." is half the calls failing, three in a row.
func (p *Provider) Fail(t testing.TB, method, pattern string, status byte) {
	t.Helper()
	p.post(t, "/fail", url.Values{"method": {method}, "pattern": {pattern}, "status": {strconv.Itoa(int(status))}})
}

// Stats reads what the provider counted.
func (p *Provider) Stats(ctx context.Context) (ProviderStats, error) {
	var s ProviderStats
	b, err := p.control(ctx, http.MethodGet, "/stats", nil)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("provider %s stats %q: %w", p.Name, b, err)
	}
	return s, nil
}

// MustStats is Stats failing t on an error.
func (p *Provider) MustStats(t testing.TB) ProviderStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), controlWithin)
	defer cancel()
	s, err := p.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// WaitStats polls the provider's stats until cond holds or ctx ends; what
// says what the caller waits for.
func (p *Provider) WaitStats(ctx context.Context, what string, cond func(ProviderStats) bool) (ProviderStats, error) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		s, err := p.Stats(ctx)
		if err == nil && cond(s) {
			return s, nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return s, fmt.Errorf("provider %s: waiting for %s (last stats: held %d, executions %v, err %v): %w",
				p.Name, what, s.Held, s.Executions, err, ctx.Err())
		}
	}
}
