package authz

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/metrics"
	authzv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/authz/v1"
)

func TestValuePatterns(t *testing.T) {
	for _, c := range []struct {
		pattern, s string
		present    bool
		want       bool
	}{
		{"a/ns/x/sa/y", "a/ns/x/sa/y", true, true},
		{"a/ns/x/sa/y", "a/ns/x/sa/yy", true, false},
		{"a/ns/x/*", "a/ns/x/sa/y", true, true},
		{"a/ns/x/*", "a/ns/xx/sa/y", true, false},
		{"*/sa/y", "b/ns/z/sa/y", true, true},
		{"*/sa/y", "b/ns/z/sa/yz", true, false},
		{"*", "anything", true, true},
		{"*", "", true, true},   // a present key with an empty value
		{"*", "", false, false}, // absent: not even presence matches
		{"a*", "", false, false},
	} {
		v, err := parseValue(c.pattern)
		if err != nil {
			t.Fatalf("parseValue(%q): %v", c.pattern, err)
		}
		if got := (values{v}).match(c.s, c.present); got != c.want {
			t.Errorf("%q against %q (present %v): got %v, want %v", c.pattern, c.s, c.present, got, c.want)
		}
	}
	for _, bad := range []string{"", "a*b", "*a*", "**"} {
		if _, err := parseValue(bad); err == nil {
			t.Errorf("parseValue(%q) accepted it, want an error", bad)
		}
	}
}

func TestParsePeerURI(t *testing.T) {
	for uri, want := range map[string][3]string{
		"spiffe://cluster.local/ns/shop/sa/cart":    {"cluster.local/ns/shop/sa/cart", "shop", "ok"},
		"spiffe://example.org/workload/x":           {"example.org/workload/x", "", "ok"},
		"spiffe://td/ns//sa/x":                      {"td/ns//sa/x", "", "ok"},
		"spiffe://a/ns/x/sa/y,spiffe://b/ns/z/sa/w": {"", "", ""},
		"cluster.local/ns/shop/sa/cart":             {"", "", ""},
		"spiffe://":                                 {"", "", ""},
		"spiffe:///ns/x/sa/y":                       {"", "", ""},
	} {
		p, ns, ok := filter.ParsePeerURI(uri)
		okS := ""
		if ok {
			okS = "ok"
		}
		if got := [3]string{p, ns, okS}; got != want {
			t.Errorf("ParsePeerURI(%q) = %q, want %q", uri, got, want)
		}
	}
}

// newFilter builds the filter from the JSON of an Authz config, for a
// codec naming services by "interface" and methods by "method".
func newFilter(t *testing.T, proxy, js string) *Filter {
	t.Helper()
	c := &authzv1.Authz{}
	if err := protojson.Unmarshal([]byte(js), c); err != nil {
		t.Fatal(err)
	}
	f, err := build(c, filter.BuildContext{ProxyName: proxy, Codec: "authz.test"})
	if err != nil {
		t.Fatal(err)
	}
	return f.(*Filter)
}

func init() {
	codecs.Register("authz.test", func(codecs.Options) (codecs.Codec, error) { return describer{}, nil })
}

// count reads breeze_authz_total; tests compare before and after, so that
// -count=N runs them again in one process.
func count(proxy, result, policy string) float64 {
	return testutil.ToFloat64(metrics.Authz.WithLabelValues(proxy, result, policy))
}

type describer struct{ codecs.Codec }

func (describer) RequestKeys() (service, method string) { return "interface", "method" }

// decide runs OnRequest on a stream of the given peer and metadata,
// outside any proxy, and says "allow" or the denial's detail.
func decide(f *Filter, peer *filter.Peer, md ...string) string {
	s := &filter.Stream{Peer: peer}
	for i := 0; i+1 < len(md); i += 2 {
		s.Request.Metadata = append(s.Request.Metadata, codecs.KV{Key: md[i], Value: md[i+1]})
	}
	conn := &replyConn{}
	s.Init(&filter.Chain{Filters: []filter.Filter{f, filter.Base{}}, Names: []string{Name, "end"}}, conn, &s.Request, s.Start)
	s.Peer = peer
	s.Run()
	if conn.detail == "" {
		return "allow"
	}
	return conn.detail
}

type replyConn struct{ detail string }

func (c *replyConn) LocalReply(_ *filter.Stream, kind codecs.ErrorKind, detail string, _ bool) {
	c.detail = kind.String() + ": " + detail
}
func (*replyConn) Resume(*filter.Stream)                        {}
func (*replyConn) Write([]byte)                                 {}
func (*replyConn) Done(*filter.Stream)                          {}
func (*replyConn) Panicked(*filter.Stream, string, any, []byte) {}

var (
	cart    = &filter.Peer{Principal: "cluster.local/ns/shop/sa/cart", Namespace: "shop", IP: netip.MustParseAddr("10.1.2.3"), IdentityKnown: true}
	billing = &filter.Peer{Principal: "cluster.local/ns/pay/sa/billing", Namespace: "pay", IP: netip.MustParseAddr("192.168.0.9"), IdentityKnown: true}
	anon    = &filter.Peer{IP: netip.MustParseAddr("10.9.9.9"), IdentityKnown: true}
)

func TestDecisions(t *testing.T) {
	before := [3]float64{count("unit", "denied", "deny-delete"), count("unit", "allowed", "shop-reads"), count("unit", "denied", "none")}
	f := newFilter(t, "unit", `{"policies": [
	  {"name": "deny-delete", "action": "DENY", "rules": [{"to": [{"operation": {"methods": ["Delete*"]}}]}]},
	  {"name": "shop-reads", "rules": [{"from": [{"source": {"namespaces": ["shop"]}}], "to": [{"operation": {"services": ["*.Catalog"], "methods": ["Get*"]}}]}]},
	  {"name": "billing", "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/pay/sa/billing"]}}]}]},
	  {"name": "lan-health", "rules": [{"from": [{"source": {"ip_blocks": ["10.0.0.0/8"], "not_ip_blocks": ["10.1.0.0/16"]}}], "to": [{"operation": {"methods": ["Health"]}}]}]},
	  {"name": "gold", "rules": [{"from": [{"source": {"not_principals": ["*"]}}], "when": [{"key": "tier", "values": ["gold"], "not_values": ["gold-trial"]}]}]}
	]}`)
	for _, c := range []struct {
		name string
		peer *filter.Peer
		md   []string
		want string
	}{
		{"namespace rule allows", cart, []string{"interface", "com.shop.Catalog", "method", "GetItem"}, "allow"},
		{"namespace rule, wrong method", cart, []string{"interface", "com.shop.Catalog", "method", "PutItem"}, "bad_request: RBAC: access denied: no ALLOW policy matched"},
		{"namespace rule, wrong service", cart, []string{"interface", "com.shop.Orders", "method", "GetItem"}, "bad_request: RBAC: access denied: no ALLOW policy matched"},
		{"principal rule allows anything", billing, []string{"interface", "x", "method", "Anything"}, "allow"},
		{"deny overrides allow", billing, []string{"interface", "x", "method", "DeleteAll"}, `bad_request: RBAC: access denied: DENY policy "deny-delete" matched`},
		{"ip block", anon, []string{"method", "Health"}, "allow"},
		{"not ip block", &filter.Peer{IP: netip.MustParseAddr("10.1.9.9")}, []string{"method", "Health"}, "bad_request: RBAC: access denied: no ALLOW policy matched"},
		{"no address matches no ip block", &filter.Peer{}, []string{"method", "Health"}, "bad_request: RBAC: access denied: no ALLOW policy matched"},
		{"when, without identity", anon, []string{"tier", "gold"}, "allow"},
		{"when not_values", anon, []string{"tier", "gold-trial"}, "bad_request: RBAC: access denied: no ALLOW policy matched"},
		{"when, key absent", anon, nil, "bad_request: RBAC: access denied: no ALLOW policy matched"},
		{"not_principals * needs no identity", cart, []string{"tier", "gold"}, "bad_request: RBAC: access denied: no ALLOW policy matched"},
		{"no peer: identity unknown, an ALLOW on callers admits none", nil, []string{"tier", "gold"}, "bad_request: RBAC: access denied: no ALLOW policy matched"},
		{"no peer matches no principal", nil, []string{"interface", "x", "method", "Anything"}, "bad_request: RBAC: access denied: no ALLOW policy matched"},
	} {
		if got := decide(f, c.peer, c.md...); got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
	if got := count("unit", "denied", "deny-delete") - before[0]; got != 1 {
		t.Errorf(`breeze_authz_total{proxy="unit",result="denied",policy="deny-delete"} increased by %v, want 1`, got)
	}
	if got := count("unit", "allowed", "shop-reads") - before[1]; got != 1 {
		t.Errorf(`breeze_authz_total{proxy="unit",result="allowed",policy="shop-reads"} increased by %v, want 1`, got)
	}
	if got := count("unit", "denied", "none") - before[2]; got != 9 {
		t.Errorf(`breeze_authz_total{proxy="unit",result="denied",policy="none"} increased by %v, want 9`, got)
	}
}

// Where nothing hands Breeze the caller's certificate (IdentityKnown
// false), identity fields are taken the way that denies more: a DENY
// policy on callers denies every caller its other fields match, an ALLOW
// policy on callers admits none; fields not on the identity still decide.
func TestIdentityUnknownDeniesMore(t *testing.T) {
	deny := newFilter(t, "unknown-deny", `{"policies": [
	  {"name": "no-mallory", "action": "DENY", "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/evil/sa/mallory"]}}], "to": [{"operation": {"methods": ["Get*"]}}]}]},
	  {"name": "no-plaintext", "action": "DENY", "rules": [{"from": [{"source": {"not_principals": ["*"], "ip_blocks": ["10.9.0.0/16"]}}]}]}
	]}`)
	allow := newFilter(t, "unknown-allow", `{"policies": [
	  {"name": "shop", "rules": [{"from": [{"source": {"namespaces": ["shop"]}}]}]},
	  {"name": "lan-health", "rules": [{"from": [{"source": {"ip_blocks": ["10.0.0.0/8"]}}], "to": [{"operation": {"methods": ["Health"]}}]}]}
	]}`)
	unknown := func(p *filter.Peer) *filter.Peer {
		q := *p
		q.Principal, q.Namespace, q.IdentityKnown = "", "", false
		return &q
	}
	const noAllow = "bad_request: RBAC: access denied: no ALLOW policy matched"
	for _, c := range []struct {
		name string
		f    *Filter
		peer *filter.Peer
		md   []string
		want string
	}{
		{"deny on a principal, known other caller", deny, cart, []string{"method", "GetItem"}, "allow"},
		{"deny on a principal, unknown caller", deny, unknown(cart), []string{"method", "GetItem"}, `bad_request: RBAC: access denied: DENY policy "no-mallory" matched`},
		{"deny on a principal, unknown caller, other method", deny, unknown(cart), []string{"method", "PutItem"}, "allow"},
		{"deny plaintext, known plaintext caller in the block", deny, anon, []string{"method", "PutItem"}, `bad_request: RBAC: access denied: DENY policy "no-plaintext" matched`},
		{"deny plaintext, unknown caller outside the block", deny, unknown(cart), []string{"method", "PutItem"}, "allow"},
		{"allow on a namespace, known", allow, cart, []string{"method", "Anything"}, "allow"},
		{"allow on a namespace, unknown", allow, unknown(cart), []string{"method", "Anything"}, noAllow},
		{"allow on addresses only, unknown", allow, unknown(cart), []string{"method", "Health"}, "allow"},
		{"no peer at all", allow, nil, []string{"method", "Anything"}, noAllow},
	} {
		if got := decide(c.f, c.peer, c.md...); got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
}

// Istio: with no ALLOW policy everything not denied is allowed; an ALLOW
// policy without rules allows nothing; a rule without fields matches all.
func TestPolicyShapes(t *testing.T) {
	before := count("shapes", "allowed", "none")
	for _, c := range []struct {
		cfg, want string
	}{
		{`{}`, "allow"},
		{`{"policies": [{"name": "d", "action": "DENY"}]}`, "allow"},
		{`{"policies": [{"name": "a"}]}`, "bad_request: RBAC: access denied: no ALLOW policy matched"},
		{`{"policies": [{"name": "a", "rules": [{}]}]}`, "allow"},
		{`{"policies": [{"name": "d", "action": "DENY", "rules": [{}]}, {"name": "a", "rules": [{}]}]}`, `bad_request: RBAC: access denied: DENY policy "d" matched`},
	} {
		if got := decide(newFilter(t, "shapes", c.cfg), cart, "method", "M"); got != c.want {
			t.Errorf("%s: got %q, want %q", c.cfg, got, c.want)
		}
	}
	if got := count("shapes", "allowed", "none") - before; got != 2 {
		t.Errorf(`breeze_authz_total{proxy="shapes",result="allowed",policy="none"} increased by %v, want 2`, got)
	}
}

func TestValidationNamesTheField(t *testing.T) {
	f, _ := filter.Lookup(Name)
	for cfg, want := range map[string]string{
		`{"policies": [{"name": ""}]}`:                                                            `policies[0].name: "": must not be empty`,
		`{"policies": [{"name": "a"}, {"name": "a"}]}`:                                            `policies[1].name: "a": used twice`,
		`{"policies": [{"name": "a", "action": 1}]}`:                                              `policies[0].action: 1: only ALLOW and DENY are supported`,
		`{"policies": [{"name": "a", "rules": [{"from": [{}]}]}]}`:                                `policies[0].rules[0].from[0].source: must be set`,
		`{"policies": [{"name": "a", "rules": [{"from": [{"source": {"ip_blocks": ["x"]}}]}]}]}`:  `policies[0].rules[0].from[0].source.ip_blocks[0]: "x": neither an IP address nor a CIDR block`,
		`{"policies": [{"name": "a", "rules": [{"to": [{"operation": {"methods": ["a*b"]}}]}]}]}`: `policies[0].rules[0].to[0].operation.methods[0]: "a*b": '*' only as the whole value, its first or its last character`,
		`{"policies": [{"name": "a", "rules": [{"when": [{"key": "k"}]}]}]}`:                      `policies[0].rules[0].when[0]: needs values or not_values`,
	} {
		c := &authzv1.Authz{}
		if err := protojson.Unmarshal([]byte(cfg), c); err != nil {
			t.Errorf("%s: does not parse: %v", cfg, err)
			continue
		}
		err := f.Validate(c)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: Validate = %v, want an error saying %q", cfg, err, want)
		}
	}
	// A codec that names no method cannot evaluate a method rule: Build
	// refuses it rather than never matching.
	c := &authzv1.Authz{}
	protojson.Unmarshal([]byte(`{"policies": [{"name": "a", "rules": [{"to": [{"operation": {"methods": ["Get"]}}]}]}]}`), c)
	if _, err := build(c, filter.BuildContext{ProxyName: "p", Codec: "authz.test.plain"}); err == nil ||
		!strings.Contains(err.Error(), "to[0].operation.methods: the codec does not say which metadata key names a request's method") {
		t.Errorf("Build with a codec naming no method: %v, want an error naming the field", err)
	}
}

type plain struct{ codecs.Codec }
