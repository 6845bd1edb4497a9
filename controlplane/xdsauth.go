package controlplane

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Authenticator decides who a bearer token belongs to. The xDS server asks
// it once per stream (streams are long-lived; a proxy reconnects with its
// current token), so no cache is needed.
type Authenticator interface {
	// Authenticate returns the token's identity (for logs), or an error
	// that says why it was refused. A *RefusedError names the cause.
	Authenticate(ctx context.Context, token string) (identity string, err error)
}

// Causes of a refused xDS stream, as counted by Server.Refused.
const (
	RefusedNoToken      = "no_token"      // no "authorization: Bearer" metadata
	RefusedInvalidToken = "invalid_token" // the token is not valid: unknown, expired, wrong audience
	RefusedReviewFailed = "review_failed" // the authenticator could not decide (API server unreachable)
)

var refusalCauses = []string{RefusedNoToken, RefusedInvalidToken, RefusedReviewFailed}

// RefusedCollectors export the server's refused streams by cause, as
// breeze_xds_refused_streams_total{cause} (breeze xds and breeze
// controller register them).
func (s *Server) RefusedCollectors() []prometheus.Collector {
	var cs []prometheus.Collector
	for _, cause := range refusalCauses {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "breeze_xds_refused_streams_total",
			Help:        "xDS streams refused, by cause: no_token, invalid_token (unknown, expired, wrong audience), review_failed (the token could not be checked).",
			ConstLabels: prometheus.Labels{"cause": cause},
		}, func() float64 { return float64(s.Refused(cause)) }))
	}
	return cs
}

// RefusedError is an authenticator's refusal, with its cause.
type RefusedError struct {
	Cause  string // one of the Refused* constants
	Reason string
}

func (e *RefusedError) Error() string { return e.Reason }

// refusals counts refused streams by cause without a map per request.
type refusals [3]atomic.Uint64

func (r *refusals) add(cause string) {
	for i, c := range refusalCauses {
		if c == cause {
			r[i].Add(1)
			return
		}
	}
}

// Refused returns how many streams were refused for cause (a Refused*
// constant) since the server started.
func (s *Server) Refused(cause string) uint64 {
	for i, c := range refusalCauses {
		if c == cause {
			return s.refused[i].Load()
		}
	}
	return 0
}

// authenticate is the stream interceptor that checks the bearer token of
// each new ADS stream before go-control-plane sees it.
func (s *Server) authenticate(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	token, ok := bearer(ss.Context())
	var id string
	var err error
	if !ok {
		err = &RefusedError{Cause: RefusedNoToken, Reason: `no token: the xDS server requires "authorization: Bearer <token>" (set token_file in the xds block)`}
	} else {
		id, err = s.Auth.Authenticate(ss.Context(), token)
	}
	if err != nil {
		var re *RefusedError
		if !errors.As(err, &re) {
			re = &RefusedError{Cause: RefusedReviewFailed, Reason: err.Error()}
		}
		s.refused.add(re.Cause)
		s.log.Warn("xds stream refused", "cause", re.Cause, "err", re.Reason)
		if s.OnRefused != nil {
			s.OnRefused(re.Cause)
		}
		code := codes.Unauthenticated
		if re.Cause == RefusedReviewFailed {
			code = codes.Unavailable // the proxy retries; its token may be good
		}
		return status.Errorf(code, "xds stream refused (%s): %s", re.Cause, re.Reason)
	}
	s.log.Info("xds stream authenticated", "identity", id)
	return handler(srv, ss)
}

func bearer(ctx context.Context) (string, bool) {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if t, ok := strings.CutPrefix(v, "Bearer "); ok && t != "" {
			return t, true
		}
	}
	return "", false
}

// StaticToken accepts the one token held in a file (breeze xds outside
// Kubernetes: tests and development). The file is read again for each
// stream, so it can be replaced while the server runs.
type StaticToken struct{ File string }

func (a StaticToken) Authenticate(_ context.Context, token string) (string, error) {
	want, err := os.ReadFile(a.File)
	if err != nil {
		return "", fmt.Errorf("static token file: %w", err)
	}
	want = bytes.TrimSpace(want)
	if len(want) == 0 || subtle.ConstantTimeCompare(want, []byte(token)) != 1 {
		return "", &RefusedError{Cause: RefusedInvalidToken, Reason: "token does not match the server's static token file"}
	}
	return "static-token", nil
}
