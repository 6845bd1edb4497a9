package controller

import (
	"context"
	"strings"
	"testing"

	"github.com/breeze-mesh/breeze/controlplane"
	authzv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/authz/v1"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
	"github.com/breeze-mesh/breeze/xds/client"
)

// routePolicies names the authz policies on a route table's routes
// (typed_per_filter_config["authz"]), "route=policy,policy ..." in order.
func routePolicies(t *testing.T, rc *breezev1.RouteConfiguration) string {
	var out []string
	for _, r := range rc.GetRoutes() {
		a, ok := r.GetTypedPerFilterConfig()["authz"]
		if !ok {
			out = append(out, r.GetName()+"=")
			continue
		}
		var cfg authzv1.Authz
		if err := a.UnmarshalTo(&cfg); err != nil {
			t.Fatalf("route %s: authz config: %v", r.GetName(), err)
		}
		var names []string
		for _, p := range cfg.GetPolicies() {
			names = append(names, p.GetName()+"/"+p.GetAction().String())
		}
		out = append(out, r.GetName()+"="+strings.Join(names, ","))
	}
	return strings.Join(out, " ")
}

// TestAuthorizationPoliciesFromTheAPIServer: an Aeraki DubboAuthorizationPolicy
// applied through the API server reaches the routes of its namespace's
// hosts over xDS, changes with it, and goes with it (issue 19: policies
// delivered by the controller as by breeze xds).
func TestAuthorizationPoliciesFromTheAPIServer(t *testing.T) {
	ns := namespace(t)
	host := "greeter." + ns + ".svc.cluster.local"
	apply(t, greeterService(ns))
	apply(t, endpointSlice(ns, "greeter", "greeter-abc", map[string]bool{"10.1.0.1": true}))

	c, err := client.New(client.Options{Address: env.xds, NodeID: "authz-" + ns})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var routes latest[*breezev1.RouteConfiguration]
	defer c.WatchRoutes(controlplane.RouteConfigName(host, 20880), func(rc *breezev1.RouteConfiguration) error { return routes.apply(rc) })()
	wait := func(want string) {
		t.Helper()
		eventually(t, "route policies "+want, func() (bool, string) {
			rc, _ := routes.get()
			got := routePolicies(t, rc)
			return got == want, got
		})
	}
	wait("default=")

	policy := func(action, method string) string {
		return `
apiVersion: dubbo.aeraki.io/v1alpha1
kind: DubboAuthorizationPolicy
metadata: {name: no-delete, namespace: ` + ns + `}
spec:
  action: ` + action + `
  rules:
  - to:
    - operation: {methods: [` + method + `]}
`
	}
	apply(t, policy("DENY", "deleteAll"))
	wait("default=" + ns + "/no-delete/DENY")
	apply(t, policy("ALLOW", "sayHello"))
	wait("default=" + ns + "/no-delete/ALLOW")
	if err := env.client.Delete(context.Background(), object(t, policy("ALLOW", "sayHello"))); err != nil {
		t.Fatal(err)
	}
	wait("default=")
}
