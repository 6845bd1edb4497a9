package controlplane

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/anypb"

	metaprotocolv1alpha1 "github.com/aeraki-mesh/api/metaprotocol/v1alpha1"

	globalratelimitv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/global_ratelimit/v1"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// globalRateLimitFilter is the name the global_ratelimit filter
// (filters/globalratelimit) registers: every proxy's chain has it, so the
// routes' configs this file writes are applied without the proxy config
// naming it.
const globalRateLimitFilter = "global_ratelimit"

// globalRateLimit puts the config of the host's MetaRouter's
// globalRateLimit on every route of rc, so that its requests are checked
// with the rate-limit service. It reports false after an error: the
// table is not served (its last good version stays).
//
// Aeraki applies a globalRateLimit to the whole host, on the provider's
// inbound side; Breeze applies it wherever the host's route table is used.
// The limit being the service's, the count is the same.
//
// key is the MetaRouter's key in t.routers: the host for the sidecars'
// table, routerKey of a gateway for a gateway's.
func (t *translator) globalRateLimit(key string, rc *breezev1.RouteConfiguration) bool {
	o := t.routers[key]
	if o == nil {
		return true
	}
	g := o.Spec.(*metaprotocolv1alpha1.MetaRouter).GetGlobalRateLimit()
	if g == nil {
		return true
	}
	// Translated once per port: report its problems once.
	defer t.dedupe(len(t.out.Problems))
	cfg, ok := t.globalRateLimitConfig(o, g)
	if !ok {
		return false
	}
	a, err := anypb.New(cfg)
	if err != nil {
		t.problem(o, "spec.globalRateLimit", false, "%v", err)
		return false
	}
	for _, r := range rc.GetRoutes() {
		if r.TypedPerFilterConfig == nil {
			r.TypedPerFilterConfig = map[string]*anypb.Any{}
		}
		r.TypedPerFilterConfig[globalRateLimitFilter] = a
	}
	return true
}

// globalRateLimitConfig maps Aeraki's fields one to one; each descriptor
// {property, descriptorKey} becomes a descriptor of one entry whose value
// is the request's metadata property, as Aeraki's data plane sends it.
func (t *translator) globalRateLimitConfig(o *Object, g *metaprotocolv1alpha1.GlobalRateLimit) (*globalratelimitv1.GlobalRateLimit, bool) {
	const field = "spec.globalRateLimit"
	ok := true
	fail := func(f, format string, args ...any) {
		t.problem(o, field+f, false, format, args...)
		ok = false
	}
	cfg := &globalratelimitv1.GlobalRateLimit{Domain: g.GetDomain(), DenyOnFail: g.GetDenyOnFail()}
	if g.GetDomain() == "" {
		fail(".domain", "required")
	}
	// No match: every request of the host, as Aeraki's API says (its data
	// plane, unlike its API, then checks none).
	matchers, mok := t.attributeMatchers(o, field+".match", g.GetMatch())
	ok = ok && mok
	cfg.Match = matchers
	addr, warning, err := rateLimitAddress(g.GetRateLimitService())
	if err != nil {
		fail(".rateLimitService", "%q: %v", g.GetRateLimitService(), err)
	} else if warning != "" {
		t.problem(o, field+".rateLimitService", true, "%q: %s", g.GetRateLimitService(), warning)
	}
	cfg.RateLimitService = addr
	if d := g.GetRequestTimeout(); d != nil {
		if d.CheckValid() != nil || d.AsDuration() <= 0 {
			fail(".requestTimeout", "%s: must be positive", d.AsDuration())
		}
		cfg.RequestTimeout = d
	}
	if len(g.GetDescriptors()) == 0 {
		fail(".descriptors", "at least one descriptor is required")
	}
	for i, d := range g.GetDescriptors() {
		f := fmt.Sprintf(".descriptors[%d]", i)
		if d.GetProperty() == "" {
			fail(f+".property", "required")
		}
		if d.GetDescriptorKey() == "" {
			fail(f+".descriptorKey", "required")
		}
		cfg.Descriptors = append(cfg.Descriptors, &globalratelimitv1.Descriptor{Entries: []*globalratelimitv1.Entry{{
			Key: d.GetDescriptorKey(), ValueFrom: &globalratelimitv1.Entry_MetadataKey{MetadataKey: d.GetProperty()},
		}}})
	}
	return cfg, ok
}

// rateLimitAddress reads rateLimitService: an Istio cluster name, as
// Aeraki's samples write it (outbound|8081||rate-limit-server.ns.svc.cluster.local),
// becomes host:port; host:port is taken as it is. Breeze dials the
// service itself, by name, so a cluster's subset is not applied: that is
// the warning.
func rateLimitAddress(s string) (addr, warning string, err error) {
	if s == "" {
		return "", "", fmt.Errorf("required")
	}
	if parts := strings.Split(s, "|"); len(parts) == 4 {
		direction, port, subset, host := parts[0], parts[1], parts[2], parts[3]
		if direction != "outbound" {
			return "", "", fmt.Errorf("an Istio cluster name must be an outbound one (outbound|PORT||HOST): Breeze dials its host and port")
		}
		if host == "" {
			return "", "", fmt.Errorf("no host in the cluster name (outbound|PORT||HOST)")
		}
		addr = net.JoinHostPort(host, port)
		if subset != "" {
			warning = fmt.Sprintf("subset %q not applied: Breeze calls %s, all the endpoints its name resolves to", subset, addr)
		}
	} else {
		addr = s
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return "", "", fmt.Errorf("want an Istio cluster name (outbound|8081||rate-limit.ns.svc.cluster.local) or host:port")
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return "", "", fmt.Errorf("port %q: must be 1–65535", port)
	}
	return addr, warning, nil
}
