package harness

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/e2e/internal/greeter"
)

const metricsText = `# HELP breeze_dropped_total Frames dropped.
# TYPE breeze_dropped_total counter
breeze_dropped_total{proxy="a",reason="late_response"} 2
breeze_dropped_total{proxy="b",reason="late_response"} 3
breeze_dropped_total{proxy="a",reason="unexpected_heartbeat"} 7
breeze_dropped_totally{proxy="a"} 100
breeze_plain 1.5
`

func TestSumMetric(t *testing.T) {
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"breeze_dropped_total", nil, 12},
		{"breeze_dropped_total", []string{`reason="late_response"`}, 5},
		{"breeze_dropped_total", []string{`proxy="a"`, `reason="late_response"`}, 2},
		{"breeze_dropped_total", []string{`proxy="c"`}, 0},
		{"breeze_plain", nil, 1.5},
		{"breeze_missing", nil, 0},
	} {
		if got := SumMetric(metricsText, tc.name, tc.labels...); got != tc.want {
			t.Errorf("SumMetric(%s, %v) = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
}

func TestRunCalls(t *testing.T) {
	var inFlight, most atomic.Int32
	// The calls hold until three are in flight at once, so that the width
	// is used (a fourth at once would show), without a sleep.
	full := make(chan struct{})
	var fullOnce sync.Once
	outs := RunCalls(context.Background(), 20, 3, time.Second,
		func(i int) CallSpec {
			if i == 5 {
				return CallSpec{Method: "Whoami"}
			}
			return CallSpec{Method: "Greet", Arg: strings.Repeat("x", i)}
		},
		func(ctx context.Context, s CallSpec) (greeter.Reply, error) {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			if n == 3 {
				fullOnce.Do(func() { close(full) })
			}
			select {
			case <-full:
			case <-ctx.Done():
				return greeter.Reply{}, ctx.Err()
			}
			switch {
			case s.Arg == "xxx":
				return greeter.Reply{Provider: "p", Arg: "another call's"}, nil
			case s.Arg == "xxxx":
				return greeter.Reply{}, errors.New("refused")
			}
			return greeter.Reply{Provider: "p" + string('0'+rune(len(s.Arg)%2)), Arg: s.Arg}, nil
		})
	if len(outs) != 20 || most.Load() > 3 {
		t.Fatalf("%d outcomes, %d calls at once at most; want 20, at most 3", len(outs), most.Load())
	}
	for i, o := range outs {
		switch wantErr := i == 3 || i == 4; {
		case wantErr != (o.Err != nil):
			t.Errorf("call %d (%+v): err %v", i, o.Call, o.Err)
		case i == 3 && !strings.Contains(o.Err.Error(), "got the answer to"):
			t.Errorf("call 3: %v; want the mismatch named", o.Err)
		}
	}
	count := Served(t, append(outs[:3:3], outs[5:]...))
	if count["p0"]+count["p1"] != 18 {
		t.Errorf("served %v; want 18 calls", count)
	}
}

func TestWithinSigmas(t *testing.T) {
	// Binomial(1000, 0.2): 200 ± 5 × 12.65.
	for k, want := range map[int]bool{200: true, 137: true, 136: false, 263: true, 264: false} {
		if ok, lo, hi := WithinSigmas(k, 1000, 0.2, 5); ok != want {
			t.Errorf("WithinSigmas(%d) = %v (%.1f..%.1f), want %v", k, ok, lo, hi, want)
		}
	}
}

func TestLineCalls(t *testing.T) {
	type result struct {
		ID  int64  `json:"id"`
		Arg string `json:"arg"`
	}
	type call struct {
		ID  int64  `json:"id"`
		Arg string `json:"arg"`
	}
	// A peer that answers every call with itself, except those asking to be
	// dropped.
	l := NewLineCalls("the echo process", func(r result) int64 { return r.ID })
	l.Proc = StartWith(t, ProcOptions{Stdin: true, OnLine: l.OnLine}, "echo", "sed", "-u", "-e", `/"drop"/d`, "-e", "s/^/RESULT /")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errs := make(chan error, 20)
	for i := range 20 {
		go func() {
			arg := strings.Repeat("a", i)
			r, err := l.Do(ctx, func(id int64) any { return call{ID: id, Arg: arg} })
			if err == nil && r.Arg != arg {
				err = errors.New("got the result of another call: " + r.Arg)
			}
			errs <- err
		}()
	}
	for range 20 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if _, err := l.Do(short, func(id int64) any { return call{ID: id, Arg: "drop"} }); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("an unanswered call: %v; want the deadline", err)
	}
	l.Proc.Kill()
	if _, err := l.Do(ctx, func(id int64) any { return call{ID: id, Arg: "late"} }); err == nil {
		t.Error("a call after the process was killed succeeded")
	}
	if out := l.Proc.Output(); strings.Contains(out, "RESULT") {
		t.Errorf("RESULT lines kept in the output:\n%s", out)
	}
}
