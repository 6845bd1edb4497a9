package retry

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

func u32(v uint32) *uint32 { return &v }

func TestCompileDefaults(t *testing.T) {
	p, err := Compile(&breezev1.RetryPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	if p.On != ConnectFailure|Reset || p.NumRetries != 1 || p.BaseInterval != 25*time.Millisecond || p.MaxInterval != 250*time.Millisecond {
		t.Fatalf("defaults: %+v; want connect-failure,reset, 1 retry, 25ms..250ms", p)
	}
	if none, _ := Compile(nil); none != nil {
		t.Fatalf("no policy compiled to %+v", none)
	}
	off, err := Compile(&breezev1.RetryPolicy{NumRetries: u32(0)})
	if err != nil || off.Retries(Reset) {
		t.Fatalf("num_retries 0: %+v %v; want a policy that retries nothing", off, err)
	}
}

func TestCompileConditions(t *testing.T) {
	p, err := Compile(&breezev1.RetryPolicy{RetryOn: " reset, goaway,retriable-status-codes ", RetriableStatusCodes: []uint32{31}, NumRetries: u32(3)})
	if err != nil {
		t.Fatal(err)
	}
	for on, want := range map[On]bool{Reset: true, GoAway: true, Status: true, ConnectFailure: false, Timeout: false} {
		if p.Retries(on) != want {
			t.Errorf("Retries(%v) = %v, want %v", on, !want, want)
		}
	}
	if !p.RetriesStatus(31) || p.RetriesStatus(70) {
		t.Errorf("RetriesStatus(31) %v, (70) %v; want true, false", p.RetriesStatus(31), p.RetriesStatus(70))
	}
}

func TestCompileErrors(t *testing.T) {
	for _, tc := range []struct {
		p    *breezev1.RetryPolicy
		want string
	}{
		{&breezev1.RetryPolicy{RetryOn: "reset,5xx"}, `unknown condition "5xx" (known: connect-failure, reset, goaway, retriable-status-codes, timeout)`},
		{&breezev1.RetryPolicy{RetryOn: "timeout"}, "needs idempotent: true"},
		{&breezev1.RetryPolicy{RetryOn: "retriable-status-codes"}, "needs retriable_status_codes"},
		{&breezev1.RetryPolicy{PerTryTimeout: durationpb.New(0)}, "per_try_timeout 0s: must be positive"},
		{&breezev1.RetryPolicy{RetryBackOff: &breezev1.RetryBackOff{BaseInterval: durationpb.New(time.Second), MaxInterval: durationpb.New(time.Millisecond)}}, "max_interval 1ms: must not be below base_interval 1s"},
	} {
		_, err := Compile(tc.p)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Compile(%v) = %v; want an error containing %q", tc.p, err, tc.want)
		}
	}
	if _, err := Compile(&breezev1.RetryPolicy{RetryOn: "timeout", Idempotent: true}); err != nil {
		t.Errorf("timeout with idempotent: %v", err)
	}
}

func TestBackoffDoublesUpToMax(t *testing.T) {
	p := &Policy{BaseInterval: 10 * time.Millisecond, MaxInterval: 50 * time.Millisecond}
	var got []time.Duration
	for n := 1; n <= 5; n++ {
		got = append(got, p.Backoff(n))
	}
	want := []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("backoffs %v, want %v", got, want)
		}
	}
	if d := p.Backoff(1000); d != 50*time.Millisecond {
		t.Fatalf("backoff of retry 1000 = %v: the shift overflowed", d)
	}
}
