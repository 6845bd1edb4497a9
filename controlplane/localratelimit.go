package controlplane

import (
	"fmt"

	metaprotocolv1alpha1 "github.com/aeraki-mesh/api/metaprotocol/v1alpha1"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/breeze-mesh/breeze/filters/localratelimit"
	localratelimitv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/local_ratelimit/v1"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// The fields of MetaRouter.localRateLimit, all applied (fields.go has the
// rest of the table).
func init() {
	for _, f := range []string{
		"LocalRateLimit.token_bucket", "LocalRateLimit.conditions",
		"LocalRateLimit.TokenBucket.max_tokens", "LocalRateLimit.TokenBucket.tokens_per_fill", "LocalRateLimit.TokenBucket.fill_interval",
		"LocalRateLimit.Condition.match", "LocalRateLimit.Condition.token_bucket",
	} {
		fields[protoreflect.FullName("metaprotocol.aeraki.io.v1alpha1."+f)] = applied
	}
}

// localRateLimit puts a MetaRouter's localRateLimit on every route of the
// route table rc, as the local_ratelimit filter's per-route config with
// the table's name as its scope.
//
// Aeraki's semantics (meta-protocol-proxy's local_ratelimit filter, which
// Aeraki configures from this field on the inbound listener of each of the
// MetaRouter's hosts): the conditions are tried in order and the first
// whose match holds takes the request's token; a request none matches
// takes one from tokenBucket, and is not limited without it; the buckets
// are the listener's, shared by all its routes. One scope per table (per
// host and port, as Aeraki's listener) gives the same sharing; the proxy
// applies it when its filters list local_ratelimit. It reports false
// after reporting an error.
func (t *translator) localRateLimit(o *Object, mr *metaprotocolv1alpha1.MetaRouter, rc *breezev1.RouteConfiguration) bool {
	lrl := mr.GetLocalRateLimit()
	if lrl == nil {
		return true
	}
	// The MetaRouter is translated once per port: its problems once.
	defer t.dedupe(len(t.out.Problems))
	const field = "spec.localRateLimit"
	ok := true
	if lrl.GetTokenBucket() == nil && len(lrl.GetConditions()) == 0 {
		t.problem(o, field, false, "at least one of tokenBucket or conditions is required")
		ok = false
	}
	cfg := &localratelimitv1.LocalRateLimit{Scope: rc.GetName()}
	if tb := lrl.GetTokenBucket(); tb != nil {
		cfg.TokenBucket = t.tokenBucket(o, field+".tokenBucket", tb, &ok)
	}
	for i, c := range lrl.GetConditions() {
		f := fmt.Sprintf("%s.conditions[%d]", field, i)
		// Without a match, every request matches (Aeraki's API).
		matchers, mok := t.attributeMatchers(o, f+".match", c.GetMatch())
		ok = ok && mok
		if c.GetTokenBucket() == nil {
			t.problem(o, f+".tokenBucket", false, "required")
			ok = false
			continue
		}
		cfg.Conditions = append(cfg.Conditions, &localratelimitv1.Condition{
			Match: matchers, TokenBucket: t.tokenBucket(o, f+".tokenBucket", c.GetTokenBucket(), &ok),
		})
	}
	if !ok {
		return false
	}
	// What the checks above let through, the filter accepts; a mismatch
	// is Breeze's bug, reported rather than served.
	if err := localratelimit.Validate(cfg); err != nil {
		t.problem(o, field, false, "translates to an invalid local_ratelimit config: %v", err)
		return false
	}
	a, err := anypb.New(cfg)
	if err != nil {
		t.problem(o, field, false, "%v", err)
		return false
	}
	for _, r := range rc.GetRoutes() {
		if r.TypedPerFilterConfig == nil {
			r.TypedPerFilterConfig = map[string]*anypb.Any{}
		}
		r.TypedPerFilterConfig[localratelimit.Name] = a
	}
	return true
}

// tokenBucket translates a token bucket, with Aeraki's checks (its
// admission webhook's, and meta-protocol-proxy's 50ms bound).
func (t *translator) tokenBucket(o *Object, field string, tb *metaprotocolv1alpha1.LocalRateLimit_TokenBucket, ok *bool) *localratelimitv1.TokenBucket {
	bad := func(f, format string, args ...any) {
		t.problem(o, field+f, false, format, args...)
		*ok = false
	}
	if tb.GetMaxTokens() < 1 {
		bad(".maxTokens", "%d: must be at least 1", tb.GetMaxTokens())
	}
	if tb.TokensPerFill != nil && tb.GetTokensPerFill().GetValue() < 1 {
		bad(".tokensPerFill", "0: must be at least 1 (unset: 1)")
	}
	switch fi := tb.GetFillInterval(); {
	case fi == nil:
		bad(".fillInterval", "required")
	case fi.CheckValid() != nil:
		bad(".fillInterval", "%v", fi.CheckValid())
	case fi.AsDuration() < localratelimit.MinFillInterval:
		bad(".fillInterval", "%v: must be at least %v", fi.AsDuration(), localratelimit.MinFillInterval)
	}
	out := &localratelimitv1.TokenBucket{MaxTokens: tb.GetMaxTokens()}
	if tb.GetFillInterval() != nil {
		out.FillInterval = durationpb.New(tb.GetFillInterval().AsDuration())
	}
	if tb.TokensPerFill != nil {
		out.TokensPerFill = wrapperspb.UInt32(tb.GetTokensPerFill().GetValue())
	}
	return out
}
