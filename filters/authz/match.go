package authz

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/filter"
	authzv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/authz/v1"
)

// The matchers are built once per config; a request is matched without
// allocating: string comparisons, prefix checks and a linear walk of its
// metadata.

// value is one of Istio's string patterns.
type value struct {
	kind valueKind
	s    string
}

type valueKind uint8

const (
	exact    valueKind = iota
	prefix             // "abc*"
	suffix             // "*abc"
	presence           // "*": any value, as long as there is one
)

// parseValue reads Istio's pattern: exact, "prefix*", "*suffix" or "*".
// A '*' anywhere else is refused rather than taken literally: Istio does
// not match it either, and a literal star in a principal is surely a
// mistake.
func parseValue(s string) (value, error) {
	switch {
	case s == "":
		return value{}, fmt.Errorf(`"": must not be empty`)
	case s == "*":
		return value{kind: presence}, nil
	case strings.Count(s, "*") > 1:
	case strings.HasSuffix(s, "*"):
		return value{kind: prefix, s: s[:len(s)-1]}, nil
	case strings.HasPrefix(s, "*"):
		return value{kind: suffix, s: s[1:]}, nil
	case !strings.Contains(s, "*"):
		return value{kind: exact, s: s}, nil
	}
	return value{}, fmt.Errorf(`%q: '*' only as the whole value, its first or its last character`, s)
}

func (v value) match(s string) bool {
	switch v.kind {
	case prefix:
		return strings.HasPrefix(s, v.s)
	case suffix:
		return strings.HasSuffix(s, v.s)
	case presence:
		return true
	}
	return s == v.s
}

// values matches when any of its patterns does. An absent value (a
// caller without identity, a missing key) matches none, "*" included.
type values []value

func (vs values) match(s string, present bool) bool {
	if !present {
		return false
	}
	for _, v := range vs {
		if v.match(s) {
			return true
		}
	}
	return false
}

func parseValues(field string, in []string) (values, error) {
	var out values
	for i, s := range in {
		v, err := parseValue(s)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", field, i, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// positive and negative are Istio's pair of a field and its not_ field:
// unset fields match anything; a set field must match; a set not_ field
// must not.
func positive(vs values, s string, present bool) bool { return len(vs) == 0 || vs.match(s, present) }
func negative(vs values, s string, present bool) bool { return len(vs) == 0 || !vs.match(s, present) }

type source struct {
	principals, notPrincipals values
	namespaces, notNamespaces values
	ipBlocks, notIPBlocks     []netip.Prefix
}

// match: deny says the source is a DENY policy's. Where the caller's
// identity is unknown (filter.Peer.IdentityKnown: nothing on the chain
// hands Breeze the certificate), its identity fields cannot be evaluated,
// and are taken the way that denies more, as Istio does with fields a
// proxy cannot evaluate (a DENY rule is applied without them, an ALLOW
// rule never matches): a DENY policy on callers then denies every caller
// its other fields match, an ALLOW policy on callers admits none. A
// policy never fails open for want of the identity.
func (s *source) match(p *filter.Peer, deny bool) bool {
	var principal, ns string
	var ip netip.Addr
	known := false
	if p != nil {
		principal, ns, ip, known = p.Principal, p.Namespace, p.IP, p.IdentityKnown
	}
	if !(len(s.ipBlocks) == 0 || inBlocks(s.ipBlocks, ip)) || !(len(s.notIPBlocks) == 0 || !inBlocks(s.notIPBlocks, ip)) {
		return false
	}
	if !s.identity() {
		return true
	}
	if !known {
		return deny
	}
	return positive(s.principals, principal, principal != "") && negative(s.notPrincipals, principal, principal != "") &&
		positive(s.namespaces, ns, ns != "") && negative(s.notNamespaces, ns, ns != "")
}

// identity says s has fields on the caller's identity.
func (s *source) identity() bool {
	return len(s.principals)+len(s.notPrincipals)+len(s.namespaces)+len(s.notNamespaces) > 0
}

func inBlocks(blocks []netip.Prefix, ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	for _, b := range blocks {
		if b.Contains(ip) {
			return true
		}
	}
	return false
}

// parseBlocks reads addresses ("10.1.2.3") and CIDR blocks ("10.0.0.0/8").
func parseBlocks(field string, in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, s := range in {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %q: neither an IP address nor a CIDR block", field, i, s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// operation matches the request's service and method, read from the
// metadata keys the codec names them by.
type operation struct {
	services, notServices values
	methods, notMethods   values
}

// keys are the metadata keys of a request's service and method.
type keys struct{ service, method string }

func (o *operation) match(md codecs.Metadata, k keys) bool {
	svc, svcOK := get(md, k.service)
	m, mOK := get(md, k.method)
	return positive(o.services, svc, svcOK) && negative(o.notServices, svc, svcOK) &&
		positive(o.methods, m, mOK) && negative(o.notMethods, m, mOK)
}

func get(md codecs.Metadata, key string) (string, bool) {
	if key == "" {
		return "", false
	}
	return md.Get(key)
}

type condition struct {
	key               string
	values, notValues values
}

func (c *condition) match(md codecs.Metadata) bool {
	v, ok := md.Get(c.key)
	return positive(c.values, v, ok) && negative(c.notValues, v, ok)
}

// rule matches when one of its sources, one of its operations and all of
// its conditions do (an empty list: anything).
type rule struct {
	from []source
	to   []operation
	when []condition
}

func (r *rule) match(s *filter.Stream, k keys, deny bool) bool {
	if len(r.from) > 0 {
		ok := false
		for i := range r.from {
			if r.from[i].match(s.Peer, deny) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(r.to) > 0 {
		ok := false
		for i := range r.to {
			if r.to[i].match(s.Request.Metadata, k) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for i := range r.when {
		if !r.when[i].match(s.Request.Metadata) {
			return false
		}
	}
	return true
}

// parseRule builds a rule; k says whether the codec names services and
// methods at all.
func parseRule(pr *authzv1.Rule, k keys) (rule, error) {
	var r rule
	for i, f := range pr.GetFrom() {
		at := fmt.Sprintf("from[%d].source", i)
		src := f.GetSource()
		if src == nil {
			return rule{}, fmt.Errorf("%s: must be set", at)
		}
		var s source
		var err error
		for _, fv := range []struct {
			name string
			in   []string
			out  *values
		}{
			{"principals", src.GetPrincipals(), &s.principals},
			{"not_principals", src.GetNotPrincipals(), &s.notPrincipals},
			{"namespaces", src.GetNamespaces(), &s.namespaces},
			{"not_namespaces", src.GetNotNamespaces(), &s.notNamespaces},
		} {
			if *fv.out, err = parseValues(at+"."+fv.name, fv.in); err != nil {
				return rule{}, err
			}
		}
		if s.ipBlocks, err = parseBlocks(at+".ip_blocks", src.GetIpBlocks()); err != nil {
			return rule{}, err
		}
		if s.notIPBlocks, err = parseBlocks(at+".not_ip_blocks", src.GetNotIpBlocks()); err != nil {
			return rule{}, err
		}
		r.from = append(r.from, s)
	}
	for i, t := range pr.GetTo() {
		at := fmt.Sprintf("to[%d].operation", i)
		op := t.GetOperation()
		if op == nil {
			return rule{}, fmt.Errorf("%s: must be set", at)
		}
		var o operation
		var err error
		for _, fv := range []struct {
			name string
			in   []string
			out  *values
			key  string
		}{
			{"services", op.GetServices(), &o.services, k.service},
			{"not_services", op.GetNotServices(), &o.notServices, k.service},
			{"methods", op.GetMethods(), &o.methods, k.method},
			{"not_methods", op.GetNotMethods(), &o.notMethods, k.method},
		} {
			if *fv.out, err = parseValues(at+"."+fv.name, fv.in); err != nil {
				return rule{}, err
			}
			if len(fv.in) > 0 && fv.key == "" {
				// A rule the codec cannot evaluate would silently never
				// (or, negated, always) match.
				return rule{}, fmt.Errorf("%s.%s: the codec does not say which metadata key names a request's %s", at, fv.name,
					strings.TrimSuffix(strings.TrimPrefix(fv.name, "not_"), "s"))
			}
		}
		r.to = append(r.to, o)
	}
	for i, w := range pr.GetWhen() {
		at := fmt.Sprintf("when[%d]", i)
		if w.GetKey() == "" {
			return rule{}, fmt.Errorf(`%s.key: "": must not be empty`, at)
		}
		if len(w.GetValues()) == 0 && len(w.GetNotValues()) == 0 {
			return rule{}, fmt.Errorf("%s: needs values or not_values", at)
		}
		c := condition{key: w.GetKey()}
		var err error
		if c.values, err = parseValues(at+".values", w.GetValues()); err != nil {
			return rule{}, err
		}
		if c.notValues, err = parseValues(at+".not_values", w.GetNotValues()); err != nil {
			return rule{}, err
		}
		r.when = append(r.when, c)
	}
	return r, nil
}
