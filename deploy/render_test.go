package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
)

const minimalService = `host: greeter.demo.svc.cluster.local
vip: 10.96.0.20
port: 20880
protocol: dubbo
clusters:
- name: greeter
  endpoints: [{address: 10.1.0.1, port: 20880}]
`

func renderString(t *testing.T, desc string) ([]*EnvoyFilter, error) {
	t.Helper()
	s, err := ParseService([]byte(desc))
	if err != nil {
		return nil, err
	}
	return Render(s)
}

// pluginConfig is the ProxyConfig (the TypedStruct's value) of an
// EnvoyFilter's Go filter patch (the one that replaces tcp_proxy).
func pluginConfig(t *testing.T, ef *EnvoyFilter) map[string]any {
	t.Helper()
	var v map[string]any
	for _, cp := range ef.Spec.GetConfigPatches() {
		if cp.GetApplyTo() == networkingv1alpha3.EnvoyFilter_NETWORK_FILTER && cp.GetPatch().GetOperation() == networkingv1alpha3.EnvoyFilter_Patch_REPLACE {
			v = cp.GetPatch().GetValue().AsMap()
		}
	}
	tc, _ := v["typed_config"].(map[string]any)
	pc, _ := tc["plugin_config"].(map[string]any)
	value, ok := pc["value"].(map[string]any)
	if !ok {
		t.Fatalf("%s: no plugin_config value in %v", ef.Name, v)
	}
	return value
}

func TestRenderDefaults(t *testing.T) {
	efs, err := renderString(t, minimalService)
	if err != nil {
		t.Fatal(err)
	}
	if len(efs) != 1 {
		t.Fatalf("want the outbound EnvoyFilter only, got %d", len(efs))
	}
	ef := efs[0]
	if ef.Name != "greeter-breeze-outbound" || ef.Namespace != "demo" {
		t.Errorf("got %s/%s, want demo/greeter-breeze-outbound", ef.Namespace, ef.Name)
	}
	if ef.Spec.GetWorkloadSelector() != nil {
		t.Errorf("no clients: want no workloadSelector, got %v", ef.Spec.GetWorkloadSelector())
	}
	lp := ef.Spec.GetConfigPatches()[0]
	if got := lp.GetMatch().GetListener().GetName(); got != "10.96.0.20_20880" {
		t.Errorf("listener %q", got)
	}
	// Pinned to the release this binary is built for (go.mod: Istio 1.28;
	// envoy-1.39.mod: Istio 1.31), whose API types checked the result.
	if want, _ := ProxyVersion(DefaultIstio()); lp.GetMatch().GetProxy().GetProxyVersion() != want {
		t.Errorf("proxyVersion %q, want %q", lp.GetMatch().GetProxy().GetProxyVersion(), want)
	}
	// One catch-all route to the only cluster.
	routes := lp.GetPatch().GetValue().AsMap()["typed_config"].(map[string]any)["plugin_config"].(map[string]any)["value"].(map[string]any)["route_config"].(map[string]any)["routes"].([]any)
	if len(routes) != 1 || routes[0].(map[string]any)["route"].(map[string]any)["cluster"] != "greeter" {
		t.Errorf("routes %v", routes)
	}
	if cp := ef.Spec.GetConfigPatches()[1]; cp.GetApplyTo() != networkingv1alpha3.EnvoyFilter_CLUSTER || cp.GetPatch().GetValue().AsMap()["transport_socket"] == nil {
		t.Errorf("want the plainText cluster with Istio mTLS, got %v", cp)
	}
}

func TestRenderVariants(t *testing.T) {
	for _, tc := range []struct {
		name, desc string
		check      func(t *testing.T, efs []*EnvoyFilter)
	}{
		{"plain-text upstream", minimalService + "upstream_tls: none\n", func(t *testing.T, efs []*EnvoyFilter) {
			if efs[0].Spec.GetConfigPatches()[1].GetPatch().GetValue().AsMap()["transport_socket"] != nil {
				t.Error("upstream_tls none: want no transport socket")
			}
		}},
		{"inbound only", "host: greeter\nport: 20880\ntarget_port: 8080\nprotocol: dubbo\ndirection: inbound\nselector: {app: greeter}\n", func(t *testing.T, efs []*EnvoyFilter) {
			if len(efs) != 1 || efs[0].Name != "greeter-breeze-inbound" || efs[0].Namespace != "default" {
				t.Fatalf("got %v", efs)
			}
			if p := efs[0].Spec.GetConfigPatches()[0].GetMatch().GetListener().GetFilterChain().GetDestinationPort(); p != 8080 {
				t.Errorf("destinationPort %d, want the target port 8080", p)
			}
		}},
		{"routes from xds, table named", "host: greeter.demo\nvip: 10.96.0.20\nport: 20880\nprotocol: dubbo\nxds: {address: 'breeze-control.istio-system:15010', route_config_name: greeter}\n", func(t *testing.T, efs []*EnvoyFilter) {
			pc := pluginConfig(t, efs[0])
			if x, _ := pc["xds"].(map[string]any); x["route_config_name"] != "greeter" || pc["route_config"] != nil || pc["clusters"] != nil {
				t.Errorf("want xds with route table greeter and no routes or clusters, got %v", pc)
			}
		}},
		{"routes from xds, both directions", xdsService + "direction: both\nselector: {app: greeter}\nupstream_tls: none\n", func(t *testing.T, efs []*EnvoyFilter) {
			// The inbound proxy hands every request to the local app,
			// whatever the server serves the clients.
			in := pluginConfig(t, efs[1])
			if in["xds"] != nil || in["request_timeout"] != "3s" || len(in["clusters"].([]any)) != 1 {
				t.Errorf("inbound plugin_config %v", in)
			}
		}},
		{"codec settings and filters", strings.Replace(minimalService, "protocol: dubbo", "protocol: thrift", 1) +
			"direction: both\nselector: {app: greeter}\nupstream_tls: none\n" +
			"codec_params: {transport: framed, protocol: compact}\nmax_frame_size: 1048576\nidle_timeout: 60s\n" +
			"filters: [{name: require, typed_config: {'@type': type.googleapis.com/breeze.filters.require.v1.Require, keys: [tenant]}}]\n",
			func(t *testing.T, efs []*EnvoyFilter) {
				out, in := pluginConfig(t, efs[0]), pluginConfig(t, efs[1])
				for _, pc := range []map[string]any{out, in} {
					if p := pc["codec_params"].(map[string]any); p["transport"] != "framed" || p["protocol"] != "compact" {
						t.Errorf("%s: codec_params %v", pc["stat_prefix"], p)
					}
					if pc["max_frame_size"] != 1048576.0 || pc["idle_timeout"] != "60s" {
						t.Errorf("%s: max_frame_size %v, idle_timeout %v", pc["stat_prefix"], pc["max_frame_size"], pc["idle_timeout"])
					}
				}
				// The filters are the clients' policy: the inbound proxy
				// only hands requests to the local app.
				if fs, _ := out["filters"].([]any); len(fs) != 1 || fs[0].(map[string]any)["name"] != "require" {
					t.Errorf("outbound filters %v", out["filters"])
				}
				if in["filters"] != nil {
					t.Errorf("inbound filters %v, want none", in["filters"])
				}
			}},
		{"istio 1.31", minimalService + "istio: '1.31'\n", func(t *testing.T, efs []*EnvoyFilter) {
			for _, cp := range efs[0].Spec.GetConfigPatches() {
				if got := cp.GetMatch().GetProxy().GetProxyVersion(); got != `^1\.31\.` {
					t.Errorf("%s patch: proxyVersion %q, want Istio 1.31's", cp.GetApplyTo(), got)
				}
			}
		}},
		{"istio patch release", minimalService + "istio: '1.28.3'\n", func(t *testing.T, efs []*EnvoyFilter) {
			if got := efs[0].Spec.GetConfigPatches()[0].GetMatch().GetProxy().GetProxyVersion(); got != `^1\.28\.` {
				t.Errorf("proxyVersion %q, want Istio 1.28's", got)
			}
		}},
		{"no proxy version pin", minimalService + "proxy_version: '-'\n", func(t *testing.T, efs []*EnvoyFilter) {
			if efs[0].Spec.GetConfigPatches()[0].GetMatch().GetProxy() != nil {
				t.Error("want no proxy match")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			efs, err := renderString(t, tc.desc)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, efs)
		})
	}
}

func TestRenderMistakes(t *testing.T) {
	for _, tc := range []struct{ name, desc, want string }{
		{"unknown field", minimalService + "selecter: {app: x}\n", "selecter: unknown field of a service description; did you mean selector?"},
		{"wrong type", strings.Replace(minimalService, "port: 20880\n", "port: many\n", 1), "port: want uint32"},
		{"no host", strings.Replace(minimalService, "host: greeter.demo.svc.cluster.local\n", "", 1), "host: required"},
		{"bad vip", strings.Replace(minimalService, "vip: 10.96.0.20", "vip: greeter", 1), `vip: "greeter": outbound needs the service's ClusterIP`},
		{"no routing", "host: a.b\nvip: 10.96.0.1\nport: 1\nprotocol: dubbo\n", "routes: outbound needs clusters (and routes), or xds"},
		{"only timeouts", "host: a.b\nvip: 10.96.0.1\nport: 1\nprotocol: dubbo\nrequest_timeout: 1s\n", "routes: outbound needs clusters (and routes), or xds"},
		{"codec param", minimalService + "codec_params: {transport: framed}\n", `dubbo: unknown param "transport"`},
		{"codec param type", minimalService + "codec_params: {transport: 1}\n", "codec_params: invalid value for string field"},
		{"filter", minimalService + "filters: [{name: requir}]\n", `filters[0].name: "requir": no such filter`},
		{"routes with xds", xdsService + greeterStates[0], `routes: with xds, the route table is the xDS resource "greeter.demo.svc.cluster.local_20880" (xds.route_config_name): serve these routes from the xDS server`},
		{"routes with xds, table named", strings.Replace(xdsService, "15010'", "15010', route_config_name: greeter-routes", 1) + "routes: [{route: {cluster: greeter}}]\n", `routes: with xds, the route table is the xDS resource "greeter-routes"`},
		{"clusters with xds", xdsService + "clusters: [{name: greeter, type: EDS}, {name: greeter-v2, type: EDS}]\n", `clusters: "greeter", "greeter-v2": with xds, each cluster a route names is an Envoy Cluster fetched from the xDS server`},
		{"xds address", strings.Replace(xdsService, "breeze-control.istio-system:15010", "breeze-control", 1), `xds.address: "breeze-control"`},
		{"unknown codec", strings.Replace(minimalService, "protocol: dubbo", "protocol: dubo", 1), `codec: "dubo"`},
		{"unknown route field", minimalService + "routes: [{route: {cluster: greeter}, mach: {}}]\n", "routes[0].mach: unknown field"},
		{"route to no cluster", minimalService + "routes: [{route: {cluster: greter}}]\n", `routes[0].route.cluster: "greter"`},
		{"bad endpoint", strings.Replace(minimalService, "address: 10.1.0.1", "address: greeter-v1", 1), `clusters[0].endpoints[0].address: "greeter-v1": a STATIC cluster needs a literal IP address`},
		{"inbound without selector", strings.Replace(minimalService, "protocol: dubbo", "protocol: dubbo\ndirection: inbound", 1), "selector: required for inbound"},
		{"direction", minimalService + "direction: out\n", `direction: "out": want outbound, inbound, both or gateway`},
		{"upstream tls", minimalService + "upstream_tls: mtls\n", `upstream_tls: "mtls"`},
		{"library path", minimalService + "library_path: breeze.so\n", `library_path: "breeze.so": want an absolute path`},
		{"proxy version", minimalService + "proxy_version: '('\n", `proxy_version: "("`},
		{"istio without a build", minimalService + "istio: '1.29'\n", `istio: no Breeze build for Istio "1.29": Breeze is built for Istio 1.28 (Envoy 1.36), Istio 1.31 (Envoy 1.39)`},
		{"istio unquoted", minimalService + "istio: 1.30\n", `istio: 1.3: want the release as a string, quoted ("1.31"): YAML reads an unquoted 1.30 as the number 1.3`},
		{"proxy version of another release", minimalService + "istio: '1.31'\nproxy_version: '^1\\.28\\.'\n", `proxy_version: "^1\\.28\\." does not select Istio 1.31 proxies, which the patches are for (istio: "1.31"); leave it out for "^1\\.31\\."`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := renderString(t, tc.desc)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// xdsService takes its routes and clusters from an xDS server.
const xdsService = `host: greeter.demo.svc.cluster.local
vip: 10.96.0.20
port: 20880
protocol: dubbo
request_timeout: 3s
xds: {address: 'breeze-control.istio-system:15010'}
`

// greeterStates are two states of greeter's routing: routes, clusters,
// endpoints, what changes at run time.
var greeterStates = [2]string{`routes:
- name: all
  route: {cluster: greeter}
clusters:
- name: greeter
  endpoints: [{address: 10.1.0.1, port: 20880}]
`, `routes:
- name: gold
  match: {metadata: [{key: tenant, exact: gold}]}
  route: {cluster: greeter-v2}
- name: rest
  route: {cluster: greeter}
clusters:
- name: greeter
  lb_policy: LEAST_REQUEST
  endpoints: [{address: 10.1.0.1, port: 20880}, {address: 10.1.0.2, port: 20880}]
- name: greeter-v2
  endpoints: [{address: 10.1.0.3, port: 20880}]
`}

// A plugin_config that changes is a new listener in every client sidecar
// (Envoy drains the old one). With xds, the routing of either state is
// served by the xDS server, and the EnvoyFilters do not change with it.
func TestRenderXDSPluginConfigConstant(t *testing.T) {
	static := strings.Replace(xdsService, "xds: {address: 'breeze-control.istio-system:15010'}\n", "", 1)
	var staticPC, xdsPC, xdsYAML [2][]byte
	for i, state := range greeterStates {
		// Static: the plugin_config carries the routing, so it changes
		// with it.
		efs, err := renderString(t, static+state)
		if err != nil {
			t.Fatalf("static, state %d: %v", i, err)
		}
		if staticPC[i], err = json.Marshal(pluginConfig(t, efs[0])); err != nil {
			t.Fatal(err)
		}
		// xDS: the description names the server; the state is served by
		// it, so the description is the same for both.
		if _, err := renderString(t, xdsService+state); err == nil {
			t.Fatalf("xds, state %d in the description: want an error", i)
		}
		if efs, err = renderString(t, xdsService); err != nil {
			t.Fatalf("xds, state %d: %v", i, err)
		}
		if xdsPC[i], err = json.Marshal(pluginConfig(t, efs[0])); err != nil {
			t.Fatal(err)
		}
		if xdsYAML[i], err = MarshalEnvoyFilters(efs); err != nil {
			t.Fatal(err)
		}
	}
	if bytes.Equal(staticPC[0], staticPC[1]) {
		t.Fatalf("static: both states render the same plugin_config %s", staticPC[0])
	}
	if !bytes.Equal(xdsPC[0], xdsPC[1]) || !bytes.Equal(xdsYAML[0], xdsYAML[1]) {
		t.Fatalf("xds: plugin_configs differ:\n%s\n%s", xdsPC[0], xdsPC[1])
	}
	// Only what does not change at run time: codec, stat prefix, the xDS
	// source and its route table, timeouts.
	const want = `{"codec":"dubbo","request_timeout":"3s","stat_prefix":"outbound_greeter",` +
		`"xds":{"address":"breeze-control.istio-system:15010","route_config_name":"greeter.demo.svc.cluster.local_20880"}}`
	if string(xdsPC[0]) != want {
		t.Errorf("xds plugin_config\n got %s\nwant %s", xdsPC[0], want)
	}
	for _, s := range []string{"10.1.0.", "route_config:", "clusters:", "endpoints:"} {
		if bytes.Contains(xdsYAML[0], []byte(s)) {
			t.Errorf("xds EnvoyFilters mention %q:\n%s", s, xdsYAML[0])
		}
	}
}

// A pod that calls the service and serves it, under Istio mTLS: the
// clients overlap the selector (or are every pod: unset). The outbound side
// brings the plainText cluster with Istio mTLS; the inbound side dials the
// app with the Go socket (GO_LOOPBACK) and brings no plainText, so the two
// land on one pod and the checks pass.
func TestRenderBothIstioMTLSOnOnePod(t *testing.T) {
	for _, clients := range []string{"", "clients: {tier: front}\n", "clients: {app: greeter}\n"} {
		efs, err := renderString(t, minimalService+"direction: both\nselector: {app: greeter}\n"+clients)
		if err != nil {
			t.Fatalf("%q: %v", clients, err)
		}
		if len(efs) != 2 {
			t.Fatalf("%q: got %d EnvoyFilters, want outbound and inbound", clients, len(efs))
		}
		out, in := efs[0], efs[1]
		if got := pluginConfig(t, in)["upstream_connect"]; got != "GO_LOOPBACK" {
			t.Errorf("%q: inbound upstream_connect %v, want GO_LOOPBACK", clients, got)
		}
		if got := pluginConfig(t, out)["upstream_connect"]; got != nil {
			t.Errorf("%q: outbound upstream_connect %v, want unset (ENVOY: through the mTLS plainText)", clients, got)
		}
		var outPlainText, inPatches []string
		for _, cp := range out.Spec.GetConfigPatches() {
			if cp.GetApplyTo() == networkingv1alpha3.EnvoyFilter_CLUSTER {
				outPlainText = append(outPlainText, cp.GetPatch().GetValue().AsMap()["name"].(string))
				if cp.GetPatch().GetValue().AsMap()["transport_socket"] == nil {
					t.Errorf("%q: outbound plainText without Istio mTLS", clients)
				}
			}
		}
		for _, cp := range in.Spec.GetConfigPatches() {
			inPatches = append(inPatches, cp.GetApplyTo().String())
		}
		// The inbound side adds no cluster (no second plainText). Its
		// network filters are Breeze's and, on Istio 1.31's sidecars, the
		// identity filter in front of it (issue 19).
		if len(outPlainText) != 1 || slices.Contains(inPatches, networkingv1alpha3.EnvoyFilter_CLUSTER.String()) {
			t.Errorf("%q: outbound clusters %v, inbound patches %v; want [plainText] and no cluster on the inbound side", clients, outPlainText, inPatches)
		}
		y, err := MarshalEnvoyFilters(efs)
		if err != nil {
			t.Fatal(err)
		}
		if _, f := CheckEnvoyFilters(y); len(f.Errors)+len(f.Warnings) > 0 {
			t.Fatalf("%q: %v", clients, errors.Join(append(f.Errors, f.Warnings...)...))
		}
	}
}

// What the checks still refuse across services: an inbound Breeze that
// dials through plainText (upstream_tls none) on pods that are clients of
// an mTLS service gets the TLS plainText, and the two plainTexts differ.
func TestInboundThroughPlainTextUnderAnMTLSClient(t *testing.T) {
	x, err := renderString(t, minimalService+"clients: {app: shop}\n")
	if err != nil {
		t.Fatal(err)
	}
	y, err := renderString(t, "host: cart.demo.svc.cluster.local\nport: 9090\nprotocol: dubbo\ndirection: inbound\nselector: {app: shop}\nupstream_tls: none\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := pluginConfig(t, y[0])["upstream_connect"]; got != nil {
		t.Fatalf("inbound with upstream_tls none: upstream_connect %v, want unset (through its plain plainText)", got)
	}
	b, err := MarshalEnvoyFilters(append(x, y...))
	if err != nil {
		t.Fatal(err)
	}
	_, f := CheckEnvoyFilters(b)
	err = f.Err()
	for _, want := range []string{
		`this inbound Breeze dials the local app at 127.0.0.1 through "plainText", but EnvoyFilter greeter-breeze-outbound spec.configPatches[1] gives the same pods a plainText with Istio mTLS`,
		`a different "plainText" cluster than EnvoyFilter greeter-breeze-outbound spec.configPatches[1] may land on the same pods`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v\nwant an error containing %q", err, want)
		}
	}
}

// Both directions with plain-text upstreams share one plainText shape, so
// one selector for both is fine.
func TestRenderBothPlaintext(t *testing.T) {
	efs, err := renderString(t, minimalService+"direction: both\nselector: {app: greeter}\nupstream_tls: none\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(efs) != 2 {
		t.Fatalf("got %d EnvoyFilters", len(efs))
	}
	y, err := MarshalEnvoyFilters(efs)
	if err != nil {
		t.Fatal(err)
	}
	if _, f := CheckEnvoyFilters(y); len(f.Errors)+len(f.Warnings) > 0 {
		t.Fatal(errors.Join(append(f.Errors, f.Warnings...)...))
	}
}

func TestPlainTextClusterConfig(t *testing.T) {
	for _, mode := range []UpstreamTLS{UpstreamIstioMTLS, UpstreamPlaintext} {
		c, err := PlainTextClusterConfig(mode, upstreamConnectTimeout)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.ValidateAll(); err != nil {
			t.Fatal(err)
		}
		if c.GetType() != clusterv3.Cluster_ORIGINAL_DST || isIstioMTLS(c) != (mode == UpstreamIstioMTLS) {
			t.Errorf("%s: got %v", mode, c)
		}
		var f Findings
		checkPlainText(c, "c", &f)
		if err := f.Err(); err != nil {
			t.Error(err)
		}
	}
	if _, err := PlainTextClusterConfig("mtls", 0); err == nil {
		t.Error("want an error for an unknown mode")
	}
}

// A metrics address goes into both directions' plugin_config, and the
// rendered file says which pod annotations make istio-agent merge it.
func TestRenderMetrics(t *testing.T) {
	desc := `host: greeter.demo.svc.cluster.local
vip: 10.96.0.20
port: 20880
protocol: dubbo
direction: both
upstream_tls: none
clients: {app: consumer}
selector: {app: greeter}
metrics: {address: "127.0.0.1:15093"}
clusters:
- name: greeter
  endpoints: [{address: 10.1.0.1, port: 20880}]
`
	efs, err := renderString(t, desc)
	if err != nil {
		t.Fatal(err)
	}
	for _, ef := range efs {
		m, _ := pluginConfig(t, ef)["metrics"].(map[string]any)
		if m["address"] != "127.0.0.1:15093" {
			t.Errorf("%s: plugin_config metrics %v, want address 127.0.0.1:15093", ef.Name, m)
		}
	}
	s, err := ParseService([]byte(desc))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "15093", "prometheus.io/path": "/metrics"}
	if got := PodAnnotations(s); len(got) != 3 || got["prometheus.io/scrape"] != "true" || got["prometheus.io/port"] != "15093" || got["prometheus.io/path"] != "/metrics" {
		t.Errorf("PodAnnotations = %v, want %v", got, want)
	}
	y, err := RenderFile("greeter.yaml", []byte(desc))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"#   prometheus.io/scrape: \"true\"\n", "#   prometheus.io/port: \"15093\"\n", "#   prometheus.io/path: /metrics\n",
		"the clients' (app=consumer) and the service's (app=greeter) pods",
	} {
		if !bytes.Contains(y, []byte(line)) {
			t.Errorf("rendered file lacks %q:\n%s", line, y)
		}
	}
	// Without a metrics address, no annotations.
	y, err = RenderFile("greeter.yaml", []byte(minimalService))
	if err != nil || bytes.Contains(y, []byte("prometheus.io")) || PodAnnotations(&Service{}) != nil {
		t.Errorf("annotations without a metrics address (%v):\n%s", err, y)
	}
}

// RenderFileFor renders a description for the Istio release asked for, and
// says so in the header; a description that names another one is refused.
func TestRenderFileForIstio(t *testing.T) {
	y, err := RenderFileFor("1.31", "greeter.yaml", []byte(minimalService))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"# Needs Istio 1.31 sidecars (Envoy 1.39) carrying breeze.so built for them (make plugin ENVOY=1.39)\n",
		`proxyVersion: ^1\.31\.`,
	} {
		if !strings.Contains(string(y), want) {
			t.Errorf("rendered for 1.31: no %q in\n%s", want, y)
		}
	}
	if strings.Contains(string(y), `1\.28`) {
		t.Errorf("rendered for 1.31, pins 1.28 somewhere:\n%s", y)
	}
	y, err = RenderFileFor("1.28", "greeter.yaml", []byte(minimalService+"istio: '1.28'\n"))
	if err != nil || !strings.Contains(string(y), "(make plugin)\n") {
		t.Errorf("rendered for 1.28: %v\n%s", err, y)
	}
	_, err = RenderFileFor("1.31", "greeter.yaml", []byte(minimalService+"istio: '1.28'\n"))
	if err == nil || err.Error() != `istio: "1.28": the description is for Istio 1.28, not 1.31: change it, or render without --istio` {
		t.Errorf("description for 1.28 rendered --istio 1.31: got %v", err)
	}
}

// Direction gateway: one EnvoyFilter for the gateway proxies of the
// selector (context GATEWAY on both patches), Breeze in place of tcp_proxy
// on the listener of the port (no VIP needed), stat prefix gateway_…, the
// plainText cluster with Istio mTLS; no inbound side. A gateway patch
// without a listener is refused by the checks.
func TestRenderGateway(t *testing.T) {
	efs, err := renderString(t, `host: greeter.demo.svc.cluster.local
name: ingress-20880
namespace: istio-system
port: 20880
protocol: dubbo
direction: gateway
clients: {istio: ingressgateway}
xds: {address: "breeze:15010", route_config_name: istio-system/ingress/greeter.demo.svc.cluster.local_20880}
`)
	if err != nil {
		t.Fatal(err)
	}
	if len(efs) != 1 || efs[0].Name != "ingress-20880-breeze-gateway" || efs[0].Namespace != "istio-system" {
		t.Fatalf("EnvoyFilters %v, want istio-system/ingress-20880-breeze-gateway alone", efs)
	}
	ef := efs[0]
	if got := ef.Spec.GetWorkloadSelector().GetLabels(); len(got) != 1 || got["istio"] != "ingressgateway" {
		t.Errorf("workloadSelector %v, want istio=ingressgateway", got)
	}
	for i, cp := range ef.Spec.GetConfigPatches() {
		if cp.GetMatch().GetContext() != networkingv1alpha3.EnvoyFilter_GATEWAY {
			t.Errorf("configPatches[%d] context %s, want GATEWAY", i, cp.GetMatch().GetContext())
		}
	}
	lm := ef.Spec.GetConfigPatches()[0].GetMatch().GetListener()
	if lm.GetPortNumber() != 20880 || lm.GetName() != "" || lm.GetFilterChain().GetFilter().GetName() != TCPProxyFilterName {
		t.Errorf("listener match %v, want portNumber 20880 and filter %s", lm, TCPProxyFilterName)
	}
	pc := pluginConfig(t, ef)
	if pc["stat_prefix"] != "gateway_ingress-20880" || pc["codec"] != "dubbo" {
		t.Errorf("plugin config stat_prefix %v codec %v, want gateway_ingress-20880 and dubbo", pc["stat_prefix"], pc["codec"])
	}
	if x, _ := pc["xds"].(map[string]any); x["route_config_name"] != "istio-system/ingress/greeter.demo.svc.cluster.local_20880" {
		t.Errorf("plugin config xds %v, want the gateway's route table", pc["xds"])
	}
	cl := ef.Spec.GetConfigPatches()[1].GetPatch().GetValue().AsMap()
	if cl["name"] != PlainTextCluster || cl["transport_socket"] == nil {
		t.Errorf("second patch %v, want the %s cluster with Istio mTLS (a transport_socket)", cl, PlainTextCluster)
	}

	// Without a listener to match, every TCP listener of the gateway would
	// get Breeze: refused.
	y, err := ef.YAML()
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(y), "portNumber: 20880", "", 1)
	_, f := CheckEnvoyFilters([]byte(bad))
	if err := f.Err(); err == nil || !strings.Contains(err.Error(), "match.listener.portNumber: required") {
		t.Errorf("a gateway patch without a listener: %v, want an error naming match.listener.portNumber", err)
	}
}
