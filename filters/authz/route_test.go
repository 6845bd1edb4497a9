package authz

import (
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/route"
	authzv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/authz/v1"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// routeTable compiles a route table (JSON) with the authz configs of its
// routes, as the proxy does with one from xDS.
func routeTable(t *testing.T, js string) *route.Table {
	t.Helper()
	rc := &breezev1.RouteConfiguration{}
	if err := protojson.Unmarshal([]byte(js), rc); err != nil {
		t.Fatal(err)
	}
	table, err := route.Compile(rc)
	if err != nil {
		t.Fatal(err)
	}
	return table
}

// decideOn is decide with the request matched against table first.
func decideOn(f *Filter, table *route.Table, peer *filter.Peer, md ...string) string {
	s := &filter.Stream{Peer: peer}
	for i := 0; i+1 < len(md); i += 2 {
		s.Request.Metadata = append(s.Request.Metadata, codecs.KV{Key: md[i], Value: md[i+1]})
	}
	conn := &replyConn{}
	s.Init(&filter.Chain{Filters: []filter.Filter{f, filter.Base{}}, Names: []string{Name, "end"}}, conn, &s.Request, s.Start)
	s.Peer = peer
	s.Route = table.Match(s.Request.Metadata)
	s.Run()
	if conn.detail == "" {
		return "allow"
	}
	return conn.detail
}

const routesWithPolicy = `{"name": "t", "routes": [
  {"name": "guarded", "match": {"metadata": [{"key": "interface", "exact": "com.shop.Catalog"}]}, "route": {"cluster": "c"},
   "typed_per_filter_config": {"authz": {"@type": "type.googleapis.com/breeze.filters.authz.v1.Authz",
     "policies": [{"name": "mesh/reads", "rules": [{"from": [{"source": {"namespaces": ["shop"]}}], "to": [{"operation": {"methods": ["Get*"]}}]}]}]}}},
  {"name": "rest", "route": {"cluster": "c"}}]}`

// A route's policies replace the filter's for its requests; a route
// without any leaves the filter's own.
func TestRoutePoliciesReplaceFilters(t *testing.T) {
	// The filter's own policy denies everything: an ALLOW without rules.
	f := newFilter(t, "route1", `{"policies": [{"name": "closed"}]}`)
	table := routeTable(t, routesWithPolicy)
	const noAllow = "bad_request: RBAC: access denied: no ALLOW policy matched"
	before := count("route1", "allowed", "mesh/reads")
	for _, c := range []struct {
		name          string
		peer          *filter.Peer
		service, meth string
		want          string
	}{
		{"route policy allows", cart, "com.shop.Catalog", "GetItem", "allow"},
		{"route policy, other method", cart, "com.shop.Catalog", "PutItem", noAllow},
		{"route policy, other namespace", billing, "com.shop.Catalog", "GetItem", noAllow},
		{"no route policy: the filter's", cart, "com.shop.Orders", "GetItem", noAllow},
	} {
		if got := decideOn(f, table, c.peer, "interface", c.service, "method", c.meth); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
	if got := count("route1", "allowed", "mesh/reads") - before; got != 1 {
		t.Errorf(`breeze_authz_total{proxy="route1",result="allowed",policy="mesh/reads"} rose by %v, want 1`, got)
	}
}

// A proxy whose codec does not name services or methods denies the
// requests of a route whose policies match them, rather than evaluating
// rules it cannot (a DENY on a method would never match).
func TestRoutePoliciesNeedingKeysTheCodecLacks(t *testing.T) {
	c, err := build(&authzv1.Authz{}, filter.BuildContext{ProxyName: "route2", Codec: "no-such-codec"})
	if err != nil {
		t.Fatal(err)
	}
	f := c.(*Filter)
	table := routeTable(t, routesWithPolicy)
	before := count("route2", "denied", "codec")
	const want = "bad_request: " + deniedNoKeysText
	if got := decideOn(f, table, cart, "interface", "com.shop.Catalog", "method", "GetItem"); got != want {
		t.Errorf("guarded route: %q, want %q", got, want)
	}
	if got := decideOn(f, table, cart, "interface", "com.shop.Orders", "method", "GetItem"); got != "allow" {
		t.Errorf("route without policies: %q, want allow", got)
	}
	if got := count("route2", "denied", "codec") - before; got != 1 {
		t.Errorf(`breeze_authz_total{proxy="route2",result="denied",policy="codec"} rose by %v, want 1`, got)
	}
}
