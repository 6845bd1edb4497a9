package controlplane

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

const ingressGateway = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 20880, name: tcp-dubbo, protocol: TCP}
    hosts: ["*"]
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
`

// gatewayRouter is a MetaRouter for org.example.Greeter named name with
// the gateways given (YAML list items), sending everything to subset.
func gatewayRouter(name, gateways, subset string) string {
	g := ""
	if gateways != "" {
		g = "  gateways: [" + gateways + "]\n"
	}
	return `apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: ` + name + `, namespace: demo}
spec:
` + g + `  hosts: [org.example.Greeter]
  routes:
  - name: to-` + subset + `
    route: [{destination: {host: org.example.Greeter, subset: ` + subset + `}}]
`
}

// routeSummary is "name:cluster/subset" per route of a table, "" for none.
func routeSummary(rc *breezev1.RouteConfiguration) string {
	var out []string
	for _, r := range rc.GetRoutes() {
		var sub []string
		for k, v := range r.GetRoute().GetSubset() {
			sub = append(sub, k+"="+v)
		}
		slices.Sort(sub)
		out = append(out, r.GetName()+":"+r.GetRoute().GetCluster()+"/"+strings.Join(sub, ","))
	}
	return strings.Join(out, " ")
}

// MetaRouter `gateways` work as a VirtualService's: absent or `mesh`, the
// sidecars' table; a Gateway, that Gateway's table of the port it exposes
// the host on; both, both. The sidecars' table never changes for a
// MetaRouter bound to a gateway only.
func TestGatewayRouteTables(t *testing.T) {
	const cluster = "outbound|20880||org.example.Greeter"
	gwTable := GatewayRouteConfigName("istio-system", "ingress", "org.example.Greeter", 20880)
	if gwTable != "istio-system/ingress/org.example.Greeter_20880" {
		t.Fatalf("GatewayRouteConfigName = %q", gwTable)
	}
	for _, tc := range []struct {
		name            string
		routers         []string
		mesh, atGateway string
	}{
		{"no MetaRouter: default routes on both", nil,
			"default:" + cluster + "/", "default:" + cluster + "/"},
		{"no gateways: the sidecars only", []string{gatewayRouter("greeter", "", "v1")},
			"to-v1:" + cluster + "/version=v1", "default:" + cluster + "/"},
		{"the gateway only: the sidecars keep the default", []string{gatewayRouter("greeter", "istio-system/ingress", "v2")},
			"default:" + cluster + "/", "to-v2:" + cluster + "/version=v2"},
		{"mesh and the gateway: both", []string{gatewayRouter("greeter", "mesh, istio-system/ingress", "v2")},
			"to-v2:" + cluster + "/version=v2", "to-v2:" + cluster + "/version=v2"},
		{"one MetaRouter per scope", []string{gatewayRouter("mesh", "mesh", "v1"), gatewayRouter("edge", "istio-system/ingress", "v2")},
			"to-v1:" + cluster + "/version=v1", "to-v2:" + cluster + "/version=v2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{"greeter.yaml": serviceEntry + "---\n" + destinationRule, "gateway.yaml": ingressGateway}
			for i, r := range tc.routers {
				files[fmt.Sprintf("router%d.yaml", i)] = r
			}
			tr, problems := read(t, dir(t, files))
			if len(problems) > 0 {
				t.Fatalf("problems: %q", problemStrings(problems))
			}
			if got := routeSummary(tr.Resources.Routes["org.example.Greeter_20880"]); got != tc.mesh {
				t.Errorf("sidecars' table: %q, want %q", got, tc.mesh)
			}
			if got := routeSummary(tr.Resources.Routes[gwTable]); got != tc.atGateway {
				t.Errorf("gateway's table: %q, want %q", got, tc.atGateway)
			}
			want := []GatewayListener{{Namespace: "istio-system", Name: "ingress", Selector: map[string]string{"istio": "ingressgateway"},
				Port: 20880, Host: "org.example.Greeter", RouteConfigName: gwTable}}
			if fmt.Sprint(tr.Gateways) != fmt.Sprint(want) {
				t.Errorf("gateway listeners %+v, want %+v", tr.Gateways, want)
			}
			t.Logf("sidecars %q; gateway %q", tc.mesh, tc.atGateway)
		})
	}
}

// Which host a gateway port exposes: the server's hosts select among the
// Breeze hosts of that port (Istio's [namespace/]host rules), and among
// several, those a MetaRouter binds to the Gateway; still several is an
// error on the Gateway, and the port is left alone. References to
// Gateways that are not there are warnings on the MetaRouter.
func TestGatewayHostSelection(t *testing.T) {
	other := strings.ReplaceAll(otherService, "metadata: {name: other}", "metadata: {name: other, namespace: demo}")
	withHosts := func(hosts string) string {
		return strings.Replace(ingressGateway, `    hosts: ["*"]
  - port: {number: 80`, "    hosts: ["+hosts+"]\n  - port: {number: 80", 1)
	}
	for _, tc := range []struct {
		name, gateway string
		routers       []string
		host          string // exposed on 20880, "" for none
		problems      []string
	}{
		{name: "one host named", gateway: withHosts(`"demo/org.example.Other"`), host: "org.example.Other"},
		{name: "a wildcard suffix", gateway: withHosts(`"*.Alias"`), host: "org.example.Alias"},
		{name: "another namespace selects nothing", gateway: withHosts(`"prod/*"`)},
		{name: "the gateway's namespace only", gateway: withHosts(`"./*"`)},
		{name: "several, no MetaRouter: an error", gateway: ingressGateway, problems: []string{
			"gateway.yaml: Gateway istio-system/ingress: spec.servers[0].hosts: port 20880: selects 3 Breeze hosts (org.example.Alias, org.example.Greeter, org.example.Other): " +
				"one gateway port carries one Breeze route table; select one in hosts, or bind a MetaRouter of one to this Gateway (its spec.gateways); Breeze leaves this port to Istio"}},
		{name: "several, one bound by a MetaRouter", gateway: ingressGateway, routers: []string{gatewayRouter("edge", "istio-system/ingress", "v2")}, host: "org.example.Greeter"},
		{name: "a MetaRouter naming no Gateway", gateway: withHosts(`"demo/org.example.Greeter"`), routers: []string{gatewayRouter("edge", "mesh, istio-system/egress, ingress", "v2")},
			host: "org.example.Greeter", problems: []string{
				`router0.yaml: MetaRouter demo/edge: spec.gateways[1]: "istio-system/egress": no such Gateway: these routes apply at no gateway until there is one`,
				`router0.yaml: MetaRouter demo/edge: spec.gateways[2]: "ingress": no such Gateway: these routes apply at no gateway until there is one`,
			}},
		{name: "a Gateway not exposing the host", gateway: withHosts(`"demo/org.example.Other"`), routers: []string{gatewayRouter("edge", "istio-system/ingress", "v2")},
			host: "org.example.Other", problems: []string{
				`router0.yaml: MetaRouter demo/edge: spec.gateways[0]: "istio-system/ingress": the Gateway exposes no port of org.example.Greeter (a TCP server whose port is the host's and whose hosts select it): these routes apply there to nothing`,
			}},
		{name: "a malformed reference", gateway: ingressGateway, routers: []string{gatewayRouter("edge", "a/b/c", "v2")}, problems: []string{
			`router0.yaml: MetaRouter demo/edge: spec.gateways[0]: "a/b/c": want mesh, <gateway name> or <namespace>/<gateway name>, as in a VirtualService`,
			"gateway.yaml: Gateway istio-system/ingress: spec.servers[0].hosts: port 20880: selects 3 Breeze hosts (org.example.Alias, org.example.Greeter, org.example.Other): " +
				"one gateway port carries one Breeze route table; select one in hosts, or bind a MetaRouter of one to this Gateway (its spec.gateways); Breeze leaves this port to Istio"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{"greeter.yaml": serviceEntry + "---\n" + destinationRule, "other.yaml": other, "gateway.yaml": tc.gateway}
			for i, r := range tc.routers {
				files[fmt.Sprintf("router%d.yaml", i)] = r
			}
			d := dir(t, files)
			tr, problems := read(t, d)
			got := problemStrings(problems)
			for i := range got {
				got[i] = strings.ReplaceAll(got[i], d+"/", "")
			}
			if !slices.Equal(got, tc.problems) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.problems, "\n"))
			}
			var exposed string
			for _, g := range tr.Gateways {
				if g.Port == 20880 {
					exposed = g.Host
				}
			}
			if exposed != tc.host {
				t.Errorf("port 20880 exposes %q, want %q (listeners %+v)", exposed, tc.host, tr.Gateways)
			}
			t.Logf("exposed %q; problems %q", exposed, got)
		})
	}
}
