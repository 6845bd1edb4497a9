// Package retry compiles retry policies (breeze.v1.Policy): which
// failed attempts of a request are sent again, how often, after what
// backoff. The router applies them; config validation uses the same
// compiler, so that a policy the router would refuse is refused with its
// field path first. It imports only the protos.
package retry

import (
	"fmt"
	"slices"
	"strings"
	"time"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// On is a set of conditions under which a failed attempt is retried.
type On uint8

const (
	// ConnectFailure: the upstream connection failed to open.
	ConnectFailure On = 1 << iota
	// Reset: the connection closed before the response.
	Reset
	// GoAway: as Reset, on a connection whose upstream had
	// announced its shutdown.
	GoAway
	// Status: the response carries one of Policy.StatusCodes.
	Status
	// Timeout: the attempt timed out (idempotent routes only).
	Timeout
)

// onNames are retry_on's tokens, in On's bit order.
var onNames = []string{"connect-failure", "reset", "goaway", "retriable-status-codes", "timeout"}

// Defaults of Policy fields left unset.
const (
	DefaultOn           = ConnectFailure | Reset
	DefaultNumRetries   = 1
	DefaultBaseInterval = 25 * time.Millisecond
)

// Policy is a compiled breezev1.RetryPolicy.
type Policy struct {
	On         On
	NumRetries int
	// PerTryTimeout bounds each attempt; 0: what is left of the route's.
	PerTryTimeout time.Duration
	StatusCodes   []uint32
	BaseInterval  time.Duration
	MaxInterval   time.Duration
}

// Retries reports whether a failure of kind on may be retried at all.
func (p *Policy) Retries(on On) bool { return p != nil && p.NumRetries > 0 && p.On&on != 0 }

// RetriesStatus reports whether a response with the protocol status code
// may be retried.
func (p *Policy) RetriesStatus(code uint32) bool {
	return p.Retries(Status) && slices.Contains(p.StatusCodes, code)
}

// Backoff is the longest wait before the n-th retry (n from 1): the base
// interval doubled per retry, capped by the max interval. The caller draws
// the actual wait uniformly below it ("full jitter").
func (p *Policy) Backoff(n int) time.Duration {
	d := p.BaseInterval << min(n-1, 20)
	if d <= 0 || d > p.MaxInterval {
		d = p.MaxInterval
	}
	return d
}

// Compile compiles a policy; nil for none. A policy with
// num_retries 0 compiles to one that retries nothing (it overrides a
// proxy default).
func Compile(p *breezev1.RetryPolicy) (*Policy, error) {
	if p == nil {
		return nil, nil
	}
	rp := &Policy{
		NumRetries:    DefaultNumRetries,
		PerTryTimeout: p.GetPerTryTimeout().AsDuration(),
		StatusCodes:   slices.Clone(p.GetRetriableStatusCodes()),
		BaseInterval:  DefaultBaseInterval,
	}
	if p.NumRetries != nil {
		rp.NumRetries = int(p.GetNumRetries())
	}
	if p.GetPerTryTimeout() != nil && rp.PerTryTimeout <= 0 {
		return nil, fmt.Errorf("per_try_timeout %v: must be positive", rp.PerTryTimeout)
	}
	on, err := ParseOn(p.GetRetryOn())
	if err != nil {
		return nil, err
	}
	rp.On = on
	if on&Timeout != 0 && !p.GetIdempotent() {
		return nil, fmt.Errorf(`retry_on "timeout" needs idempotent: true: a request that timed out may have run, and only an idempotent one may run twice`)
	}
	if on&Status != 0 && len(rp.StatusCodes) == 0 {
		return nil, fmt.Errorf(`retry_on "retriable-status-codes" needs retriable_status_codes`)
	}
	if bo := p.GetRetryBackOff(); bo != nil {
		if bo.GetBaseInterval() != nil {
			if rp.BaseInterval = bo.GetBaseInterval().AsDuration(); rp.BaseInterval <= 0 {
				return nil, fmt.Errorf("retry_back_off.base_interval %v: must be positive", rp.BaseInterval)
			}
		}
		if bo.GetMaxInterval() != nil {
			if rp.MaxInterval = bo.GetMaxInterval().AsDuration(); rp.MaxInterval < rp.BaseInterval {
				return nil, fmt.Errorf("retry_back_off.max_interval %v: must not be below base_interval %v", rp.MaxInterval, rp.BaseInterval)
			}
		}
	}
	if rp.MaxInterval == 0 {
		rp.MaxInterval = 10 * rp.BaseInterval
	}
	return rp, nil
}

// ParseOn parses retry_on ("" gives the default).
func ParseOn(s string) (On, error) {
	if strings.TrimSpace(s) == "" {
		return DefaultOn, nil
	}
	var on On
	for tok := range strings.SplitSeq(s, ",") {
		tok = strings.TrimSpace(tok)
		i := slices.Index(onNames, tok)
		if i < 0 {
			return 0, fmt.Errorf("retry_on %q: unknown condition %q (known: %s)", s, tok, strings.Join(onNames, ", "))
		}
		on |= 1 << i
	}
	return on, nil
}

// String is the retry_on token of one condition (for counters' reason label).
func (o On) String() string {
	for i, n := range onNames {
		if o == 1<<i {
			return n
		}
	}
	return fmt.Sprintf("on(%d)", uint8(o))
}
