package logs

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a fake clock tests move by hand.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// capture records the lines written, as text.
type capture struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	h     slog.Handler
	level slog.Level
}

func newCapture(level slog.Level) (*capture, *slog.Logger) {
	c := &capture{level: level}
	c.h = slog.NewTextHandler(&c.buf, &slog.HandlerOptions{Level: level, AddSource: true})
	return c, slog.New(c)
}

func (c *capture) Enabled(_ context.Context, l slog.Level) bool { return l >= c.level }
func (c *capture) Handle(ctx context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.h.Handle(ctx, r)
}
func (c *capture) WithAttrs([]slog.Attr) slog.Handler { panic("not used") }
func (c *capture) WithGroup(string) slog.Handler      { panic("not used") }

func (c *capture) lines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := strings.TrimSpace(c.buf.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func TestBurstThenOnePerInterval(t *testing.T) {
	out, sl := newCapture(slog.LevelInfo)
	var clk clock
	l := New(sl, Options{Burst: 3, Interval: time.Second, Now: clk.now})
	for i := range 300 {
		l.Warn("bad_frame", "bad frame", "n", i)
	}
	if got := out.lines(); len(got) != 3 {
		t.Fatalf("300 lines at once wrote %d, want the burst of 3:\n%s", len(got), strings.Join(got, "\n"))
	}
	clk.advance(999 * time.Millisecond)
	l.Warn("bad_frame", "bad frame", "n", 300)
	if got := out.lines(); len(got) != 3 {
		t.Fatalf("a line within the interval was written: %v", got[3:])
	}
	clk.advance(time.Millisecond)
	l.Warn("bad_frame", "bad frame", "n", 301)
	got := out.lines()
	if len(got) != 4 || !strings.Contains(got[3], "n=301 suppressed=298") {
		t.Fatalf("after an interval, want one line saying 298 were suppressed; got %d lines, last %q", len(got), got[len(got)-1])
	}
	l.Warn("bad_frame", "bad frame", "n", 302)
	if len(out.lines()) != 4 {
		t.Fatal("a second line in the same interval was written")
	}
	clk.advance(time.Second)
	l.Warn("bad_frame", "bad frame", "n", 303)
	if got := out.lines(); len(got) != 5 || !strings.Contains(got[4], "suppressed=1") {
		t.Fatalf("want the next interval's line with suppressed=1, got %q", got[len(got)-1])
	}
}

func TestKeysHaveTheirOwnBudget(t *testing.T) {
	out, sl := newCapture(slog.LevelInfo)
	var clk clock
	l := New(sl, Options{Burst: 2, Interval: time.Second, Now: clk.now})
	for range 10 {
		l.Warn("a", "line a")
		l.Info("b", "line b")
	}
	if got := out.lines(); len(got) != 4 {
		t.Fatalf("two keys with a burst of 2 wrote %d lines, want 4:\n%s", len(got), strings.Join(got, "\n"))
	}
}

func TestQuietKeyGetsItsBurstBack(t *testing.T) {
	out, sl := newCapture(slog.LevelInfo)
	var clk clock
	l := New(sl, Options{Burst: 2, Interval: time.Second, Now: clk.now})
	l.Warn("k", "x")
	l.Warn("k", "x")
	clk.advance(time.Second) // nothing suppressed, nothing for an interval
	l.Warn("k", "x")
	l.Warn("k", "x")
	l.Warn("k", "x") // over the new burst
	got := out.lines()
	if len(got) != 4 {
		t.Fatalf("a key quiet for an interval wrote %d of 5 lines, want 4 (two bursts of 2)", len(got))
	}
	for _, line := range got {
		if strings.Contains(line, "suppressed") {
			t.Fatalf("nothing was suppressed before these lines: %q", line)
		}
	}
}

func TestDisabledLevelSpendsNoBudget(t *testing.T) {
	out, sl := newCapture(slog.LevelWarn)
	var clk clock
	l := New(sl, Options{Burst: 1, Interval: time.Second, Now: clk.now})
	for range 5 {
		l.Info("k", "off")
	}
	l.Warn("k", "on")
	got := out.lines()
	if len(got) != 1 || strings.Contains(got[0], "suppressed") {
		t.Fatalf("lines of a disabled level used the budget: %q", got)
	}
}

func TestSourceIsTheCaller(t *testing.T) {
	out, sl := newCapture(slog.LevelInfo)
	New(sl, Options{}).Error("k", "where")
	if got := out.lines(); len(got) != 1 || !strings.Contains(got[0], "logs_test.go:") {
		t.Fatalf("source is not the caller: %q", got)
	}
}

// Keys come from fixed sets; past maxKeys (a caller's bug) the extra keys
// share one budget rather than growing the map or flooding the log.
func TestTooManyKeysShareABudget(t *testing.T) {
	out, sl := newCapture(slog.LevelInfo)
	var clk clock
	l := New(sl, Options{Burst: 1, Interval: time.Second, Now: clk.now})
	for i := range maxKeys + 100 {
		l.Warn(fmt.Sprint("k", i), "x")
	}
	if got := len(out.lines()); got != maxKeys+1 {
		t.Fatalf("%d keys with a burst of 1 wrote %d lines, want %d", maxKeys+100, got, maxKeys+1)
	}
	if len(l.keys) > maxKeys+1 {
		t.Fatalf("%d budgets kept, want at most %d", len(l.keys), maxKeys+1)
	}
	// Once they are quiet, old budgets make room for new keys.
	clk.advance(time.Second)
	l.Warn("fresh", "x")
	if _, ok := l.keys["fresh"]; !ok {
		t.Fatal("quiet budgets were not forgotten for a new key")
	}
}

func TestConcurrentUse(t *testing.T) {
	out, sl := newCapture(slog.LevelInfo)
	var clk clock
	l := New(sl, Options{Burst: 5, Interval: time.Hour, Now: clk.now})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				l.Warn("k", "x")
			}
		}()
	}
	wg.Wait()
	if got := len(out.lines()); got != 5 {
		t.Fatalf("800 concurrent lines wrote %d, want the burst of 5", got)
	}
}
