package deploy

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

type mistake struct {
	name     string
	old, new string // a replacement in the file
	want     string // in an error (or, with warn, a warning)
	warn     bool
}

func runMistakes(t *testing.T, file string, check func([]byte) Findings, cases []mistake) {
	t.Helper()
	orig := string(readFile(t, file))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bad := strings.Replace(orig, tc.old, tc.new, 1)
			if bad == orig {
				t.Fatalf("%q is not in %s", tc.old, file)
			}
			f := check([]byte(bad))
			got := f.Errors
			if tc.warn {
				got = f.Warnings
			}
			err := errors.Join(got...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got errors %v\nwarnings %v\nwant one containing %q", f.Err(), errors.Join(f.Warnings...), tc.want)
			}
		})
	}
}

func TestBootstrapMistakes(t *testing.T) {
	const filter = "static_resources.listeners[0].filter_chains[0].filters[0]"
	runMistakes(t, filepath.Join(envoyConfigDir, "envoy.yaml"), func(b []byte) Findings { _, f := CheckBootstrap(b); return f }, []mistake{
		{name: "unknown field", old: "lb_policy: CLUSTER_PROVIDED", new: "lb_polcy: CLUSTER_PROVIDED",
			want: `static_resources.clusters[0].lb_polcy: unknown field (envoy.config.cluster.v3.Cluster has no field "lb_polcy"); did you mean lb_policy?`},
		{name: "wrong type URL", old: "golang.v3alpha.Config", new: "golang.v3alpha.Confg",
			want: filter + `.typed_config.@type: unknown type "type.googleapis.com/envoy.extensions.filters.network.golang.v3alpha.Confg"`},
		{name: "plugin_config as Breeze's own Any", old: "xds.type.v3.TypedStruct", new: "breeze.v1.ProxyConfig",
			want: filter + `.typed_config.plugin_config.@type: type "type.googleapis.com/breeze.v1.ProxyConfig" is Breeze's own`},
		{name: "TypedStruct of another type", old: "type_url: type.googleapis.com/breeze.v1.ProxyConfig", new: "type_url: type.googleapis.com/breeze.v1.Proxy",
			want: filter + `.typed_config.plugin_config.type_url: type "type.googleapis.com/breeze.v1.Proxy" is Breeze's own`},
		{name: "missing plainText cluster", old: "name: plainText", new: "name: plaintext",
			want: `static_resources.clusters: no cluster named "plainText"`},
		{name: "plainText not ORIGINAL_DST", old: "type: ORIGINAL_DST", new: "type: STATIC",
			want: `static_resources.clusters[0].type: STATIC: the plainText cluster must be ORIGINAL_DST`},
		{name: "plainText balancing", old: "lb_policy: CLUSTER_PROVIDED", new: "lb_policy: ROUND_ROBIN",
			want: `static_resources.clusters[0].lb_policy: ROUND_ROBIN: an ORIGINAL_DST cluster needs CLUSTER_PROVIDED`},
		{name: "bad endpoint", old: "{address: 127.0.0.1, port: 20001", new: "{address: provider-v1, port: 20001",
			want: filter + `.typed_config.plugin_config.value.clusters[0].endpoints[0].address: "provider-v1": a STATIC cluster needs a literal IP address`},
		{name: "endpoint port", old: "port: 20002", new: "port: 0",
			want: filter + `.typed_config.plugin_config.value.clusters[0].endpoints[1].port`},
		{name: "unknown Breeze field", old: "stat_prefix: greeter", new: "stat_prefx: greeter",
			want: filter + `.typed_config.plugin_config.value.stat_prefx: unknown field`},
		{name: "route to no cluster", old: "cluster: greeter\n                    subset: {version: v2}", new: "cluster: greter\n                    subset: {version: v2}",
			want: filter + `.typed_config.plugin_config.value.route_config.routes[0].route.cluster: "greter"`},
		{name: "not terminal", old: "is_terminal_filter: true", new: "is_terminal_filter: false",
			want: filter + `.typed_config.is_terminal_filter: false: must be true`},
		{name: "plugin name", old: "plugin_name: breeze", new: "plugin_name: breez",
			want: filter + `.typed_config.plugin_name: "breez": breeze.so registers the plugin "breeze"`},
		{name: "relative library path", old: "library_path: /usr/local/lib/breeze/breeze.so", new: "library_path: breeze.so",
			want: filter + `.typed_config.library_path: "breeze.so": want an absolute path`},
		{name: "library id required", old: "library_id: breeze", new: "library_id: \"\"",
			want: filter + `.typed_config.library_id: value length must be at least 1 runes`},
		{name: "PGV rule", old: "connect_timeout: 1s", new: "connect_timeout: 0s",
			want: `static_resources.clusters[0].connect_timeout: value must be greater than 0s`},
		{name: "wrong value type", old: "connect_timeout: 1s", new: "connect_timeout: 1x",
			want: `static_resources.clusters[0].connect_timeout: "1x": not a duration: Envoy reads seconds with an "s", as in 5s, 0.25s or 900s`},
		{name: "two listeners on one address", old: "  listeners:\n", new: "  listeners:\n  - name: other\n    address:\n      socket_address: {address: 0.0.0.0, port_value: 20880}\n",
			want: `static_resources.listeners[1].address.socket_address: 0.0.0.0:20880: static_resources.listeners[0] (other) has this address too: Envoy refuses a bootstrap with two listeners on one address ("duplicate address"); give each listener an address of its own`},
		{name: "port range", old: "port_value: 9901", new: "port_value: 99019",
			want: `admin.address.socket_address.port_value: value must be less than or equal to 65535`},
		{name: "filter after the Go filter", old: "  clusters:\n  # Envoy's Go filter", new: "      - name: envoy.filters.network.tcp_proxy\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n          stat_prefix: x\n          cluster: plainText\n  clusters:\n  # Envoy's Go filter",
			want: filter + `: the Go filter must be the last filter of its chain`},
		{name: "endpoints on plainText", old: "    connect_timeout: 1s\n", new: "    connect_timeout: 1s\n    load_assignment: {cluster_name: plainText, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 1}}}}]}]}\n",
			want: `static_resources.clusters[0].load_assignment: an ORIGINAL_DST cluster takes no endpoints`},
		{name: "ALPN trap", old: "    connect_timeout: 1s\n", new: "    connect_timeout: 1s\n    transport_socket: {name: envoy.transport_sockets.tls, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, common_tls_context: {alpn_protocols: [istio-peer-exchange, istio]}}}\n",
			want: `static_resources.clusters[0].transport_socket.typed_config.common_tls_context.alpn_protocols`},
		{name: "deprecated Breeze connect_timeout", old: "lb_policy: ROUND_ROBIN\n", new: "lb_policy: ROUND_ROBIN\n                connect_timeout: 2s\n",
			want: filter + `.typed_config.plugin_config.value.clusters[0].connect_timeout: 2s: deprecated and ignored: Envoy's plainText cluster sets the connect timeout`, warn: true},
		{name: "no admin", old: "admin:\n  address:\n    socket_address: {address: 0.0.0.0, port_value: 9901}\n", new: "",
			want: "admin: no admin listener", warn: true},
		{name: "not YAML", old: "node:", new: "node: [",
			want: "line 10, column 10: YAML syntax error: did not find expected ',' or ']' (while parsing a flow sequence that starts at line 8, column 7)"},
	})
}

func TestBootstrapTwoLibraries(t *testing.T) {
	orig := string(readFile(t, filepath.Join(envoyConfigDir, "envoy.yaml")))
	start := strings.Index(orig, "  - name: dubbo-greeter")
	end := strings.Index(orig, "\n  clusters:")
	second := strings.ReplaceAll(orig[start:end], "dubbo-greeter", "dubbo-other")
	second = strings.Replace(second, "port_value: 20880", "port_value: 20881", 1)
	second = strings.Replace(second, "/usr/local/lib/breeze/breeze.so", "/opt/breeze2.so", 1)
	_, f := CheckBootstrap([]byte(orig[:end] + "\n" + second + orig[end:]))
	if err := f.Err(); err == nil || !strings.Contains(err.Error(), "one process runs one Go library") {
		t.Fatalf("got %v", err)
	}
}

func TestEnvoyFilterMistakes(t *testing.T) {
	const out = "EnvoyFilter greeter-breeze-outbound: "
	const in = "EnvoyFilter greeter-breeze-inbound: "
	check := func(b []byte) Findings { _, f := CheckEnvoyFilters(b); return f }
	runMistakes(t, filepath.Join(envoyConfigDir, "istio", "greeter-envoyfilters.yaml"), check, []mistake{
		{name: "api version", old: "apiVersion: networking.istio.io/v1alpha3", new: "apiVersion: networking.istio.io/v1",
			want: out + `apiVersion: "networking.istio.io/v1": want "networking.istio.io/v1alpha3"`},
		{name: "snake_case spec field", old: "configPatches:", new: "config_patches:",
			want: out + `spec.config_patches: write "configPatches": the Kubernetes API server drops fields`},
		{name: "unknown spec field", old: "  workloadSelector:\n    labels:\n      app: consumer", new: "  workloadSelecter:\n    labels:\n      app: consumer",
			want: out + `spec.workloadSelecter: unknown field`},
		{name: "unknown metadata field", old: "  name: greeter-breeze-outbound", new: "  name: greeter-breeze-outbound\n  namespaces: x",
			want: out + `metadata.namespaces: unknown field of a Kubernetes ObjectMeta; did you mean namespace?`},
		{name: "bad name", old: "name: greeter-breeze-outbound", new: "name: Greeter_Outbound",
			want: `metadata.name: "Greeter_Outbound": not a DNS-1123 subdomain`},
		{name: "unknown enum", old: "applyTo: NETWORK_FILTER", new: "applyTo: NETWORK_FILTERS",
			want: out + `spec.configPatches[0].applyTo: "NETWORK_FILTERS": applyTo must be one of LISTENER, FILTER_CHAIN, NETWORK_FILTER, HTTP_FILTER, ROUTE_CONFIGURATION, VIRTUAL_HOST, HTTP_ROUTE, CLUSTER, EXTENSION_CONFIG, BOOTSTRAP, LISTENER_FILTER; did you mean NETWORK_FILTER?`},
		{name: "unknown field in a patch value", old: "        is_terminal_filter: true", new: "        is_terminal: true",
			want: out + `spec.configPatches[0].patch.value.typed_config.is_terminal: unknown field (envoy.extensions.filters.network.golang.v3alpha.Config has no field "is_terminal")`},
		{name: "wrong type URL in a patch value", old: "tls.v3.UpstreamTlsContext", new: "tls.v3.UpstreamTLSContext",
			want: out + `spec.configPatches[1].patch.value.transport_socket.typed_config.@type: unknown type "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTLSContext"`},
		{name: "plugin_config as Breeze's own Any", old: "'@type': type.googleapis.com/xds.type.v3.TypedStruct", new: "'@type': type.googleapis.com/breeze.v1.ProxyConfig",
			want: out + `spec.configPatches[0].patch.value.typed_config.plugin_config.@type: type "type.googleapis.com/breeze.v1.ProxyConfig" is Breeze's own: Envoy and istiod cannot resolve it`},
		{name: "no listener name", old: "        name: 10.96.20.80_20880\n", new: "",
			want: out + `spec.configPatches[0].match.listener.name: required: without it tcp_proxy is replaced on every outbound TCP listener`},
		{name: "odd listener name", old: "name: 10.96.20.80_20880", new: "name: greeter_20880",
			want: out + `spec.configPatches[0].match.listener.name: "greeter_20880": Istio names a service's outbound listener <vip>_<port>`, warn: true},
		{name: "not replacing tcp_proxy", old: "operation: REPLACE", new: "operation: INSERT_BEFORE",
			want: out + `spec.configPatches[0]: the Go filter must REPLACE envoy.filters.network.tcp_proxy`},
		{name: "context ANY", old: "context: SIDECAR_OUTBOUND\n      listener:", new: "context: ANY\n      listener:",
			want: out + `spec.configPatches[0].match.context: ANY`},
		{name: "bad proxyVersion", old: `proxyVersion: ^1\.28\.`, new: `proxyVersion: ^1\.28\.(`,
			want: out + `spec.configPatches[0].match.proxy.proxyVersion: "^1\\.28\\.(": error parsing regexp`},
		{name: "no proxyVersion", old: "      proxy:\n        proxyVersion: ^1\\.28\\.\n    patch:\n      operation: REPLACE", new: "    patch:\n      operation: REPLACE",
			want: out + `spec.configPatches[0].match.proxy.proxyVersion: unset`, warn: true},
		{name: "missing plainText cluster", old: "        name: plainText\n        transport_socket:", new: "        name: plainTxt\n        transport_socket:",
			want: out + `spec.configPatches[0]: no "plainText" cluster for these workloads`},
		{name: "ALPN trap", old: "              alpn_protocols:\n              - istio\n", new: "              alpn_protocols:\n              - istio-peer-exchange\n              - istio\n",
			want: out + `spec.configPatches[1].patch.value.transport_socket.typed_config.common_tls_context.alpn_protocols: ["istio-peer-exchange" "istio"]`},
		{name: "PGV rule in a patch value", old: "connect_timeout: 10s\n        lb_policy: CLUSTER_PROVIDED\n        name: plainText\n        transport_socket", new: "connect_timeout: 0s\n        lb_policy: CLUSTER_PROVIDED\n        name: plainText\n        transport_socket",
			want: out + `spec.configPatches[1].patch.value.connect_timeout: value must be greater than 0s`},
		{name: "inbound without a port", old: "          destinationPort: 20880\n", new: "",
			want: in + `spec.configPatches[0].match.listener.filterChain.destinationPort: required`},
		{name: "inbound dialing the pod IP", old: "                - address: 127.0.0.1", new: "                - address: 10.1.2.3",
			want: in + `spec.configPatches[0].patch.value.typed_config.plugin_config.value.clusters[0].endpoints[0].address: "10.1.2.3": upstream_connect GO_LOOPBACK dials only loopback addresses (127.0.0.0/8, ::1): any other would bypass the mesh's mTLS`},
		{name: "bad Breeze endpoint", old: "                - address: 127.0.0.1", new: "                - address: localhost",
			want: in + `spec.configPatches[0].patch.value.typed_config.plugin_config.value.clusters[0].endpoints[0].address: "localhost": a STATIC cluster needs a literal IP address`},
		{name: "inbound through plainText without one", old: "              upstream_connect: GO_LOOPBACK\n", new: "",
			want: in + `spec.configPatches[0]: no "plainText" cluster for these workloads`},
	})
}

func TestMergePatchIsAFragment(t *testing.T) {
	const ef = `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: tune, namespace: demo}
spec:
  configPatches:
  - applyTo: CLUSTER
    match: {context: SIDECAR_OUTBOUND, cluster: {name: plainText}}
    patch:
      operation: MERGE
      value: {connect_timeout: 2s}
`
	if _, f := CheckEnvoyFilters([]byte(ef)); len(f.Errors) > 0 {
		t.Fatal(f.Err())
	}
	bad := strings.Replace(ef, "connect_timeout", "connect_timeot", 1)
	if _, f := CheckEnvoyFilters([]byte(bad)); f.Err() == nil || !strings.Contains(f.Err().Error(), "spec.configPatches[0].patch.value.connect_timeot: unknown field") {
		t.Fatalf("got %v", f.Err())
	}
}

// A Breeze patch may get its plainText cluster from another file, or from
// the root namespace; not from a narrower selector.
func TestPlainTextAcrossFiles(t *testing.T) {
	rendered := string(readFile(t, filepath.Join(envoyConfigDir, "istio", "greeter-envoyfilters.yaml")))
	outbound := rendered[:strings.Index(rendered, "\n---\n")+1]
	// The outbound resource without its CLUSTER patch.
	listenerOnly := outbound[:strings.Index(outbound, "  - applyTo: CLUSTER")] + "  workloadSelector:\n    labels:\n      app: consumer\n"
	plainText := func(ns, selector string) string {
		return `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: breeze-upstream, namespace: ` + ns + `}
spec:
  ` + selector + `
  configPatches:
  - applyTo: CLUSTER
    match: {context: SIDECAR_OUTBOUND}
    patch:
      operation: ADD
      value: {name: plainText, type: ORIGINAL_DST, lb_policy: CLUSTER_PROVIDED, connect_timeout: 5s}
`
	}
	for _, tc := range []struct {
		name, other string
		ok          bool
	}{
		{"same namespace, every pod", plainText("breeze-demo", ""), true},
		{"root namespace", plainText("istio-system", ""), true},
		{"same selector", plainText("breeze-demo", "workloadSelector: {labels: {app: consumer}}"), true},
		{"narrower selector", plainText("breeze-demo", "workloadSelector: {labels: {app: consumer, version: v1}}"), false},
		{"other namespace", plainText("elsewhere", ""), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := Check(File{"a.yaml", []byte(listenerOnly)}, File{"b.yaml", []byte(tc.other)})
			err := f.Err()
			if tc.ok && err != nil {
				t.Fatal(err)
			}
			if !tc.ok && (err == nil || !strings.Contains(err.Error(), `a.yaml: EnvoyFilter greeter-breeze-outbound: spec.configPatches[0]: no "plainText" cluster`)) {
				t.Fatalf("got %v", err)
			}
		})
	}
}

func TestWorkloadAnnotations(t *testing.T) {
	demo := filepath.Join(envoyConfigDir, "istio", "demo.yaml")
	check := func(b []byte) Findings { _, f := CheckEnvoyFilters(b); return f }
	const anno = `Deployment greeter-v1: spec.template.metadata.annotations`
	const anno2 = `Deployment greeter-v2: spec.template.metadata.annotations`
	runMistakes(t, demo, check, []mistake{
		{name: "proxy image without registry", old: "proxyImage: registry.example.com/breeze/proxyv2:1.28.3-breeze", new: "proxyImage: proxyv2-breeze",
			want: anno + `["sidecar.istio.io/proxyImage"]: "proxyv2-breeze": the injector uses the annotation only when it is a full reference`},
		{name: "user volume as a list", old: `userVolume: '{"breeze":{"image":{"reference":"registry.example.com/breeze/plugin:dev","pullPolicy":"IfNotPresent"}}}'`,
			new:  `userVolume: '[{"name":"breeze","image":{"reference":"registry.example.com/breeze/plugin:dev"}}]'`,
			want: anno2 + `["sidecar.istio.io/userVolume"]: want a JSON object of volume name`},
		{name: "mount of no volume", old: `userVolumeMount: '{"breeze":`, new: `userVolumeMount: '{"breez":`,
			want: anno2 + `["sidecar.istio.io/userVolumeMount"]: mount "breez" names no volume`},
		{name: "stock image without GODEBUG", old: "        # The stock image does not set it: pilot-agent passes proxyMetadata on to Envoy.\n        proxy.istio.io/config: |\n          proxyMetadata:\n            GODEBUG: cgocheck=0\n", new: "",
			want: anno2 + `["proxy.istio.io/config"]: want proxyMetadata: {GODEBUG: cgocheck=0}`},
		{name: "Breeze image without GODEBUG", old: "        proxy.istio.io/config: |\n          proxyMetadata:\n            GODEBUG: cgocheck=0\n    spec:\n      containers:\n      - name: greeter\n        image: registry.example.com/breeze/demo-peers:dev\n        # The e2e", new: "    spec:\n      containers:\n      - name: greeter\n        image: registry.example.com/breeze/demo-peers:dev\n        # The e2e",
			want: anno + `["proxy.istio.io/config"]: no proxyMetadata GODEBUG=cgocheck=0: fine with the Dockerfile's image`, warn: true},
		{name: "proxy config field", old: "          proxyMetadata:\n            GODEBUG: cgocheck=0\n    spec:\n      containers:\n      - name: greeter\n        image: registry.example.com/breeze/demo-peers:dev\n        # The e2e", new: "          proxyMetdata:\n            GODEBUG: cgocheck=0\n    spec:\n      containers:\n      - name: greeter\n        image: registry.example.com/breeze/demo-peers:dev\n        # The e2e",
			want: anno + `["proxy.istio.io/config"]: proxyMetdata: unknown field`},
	})
}

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		data string
		want Kind
	}{
		{"static_resources: {}", KindBootstrap},
		{"admin: {}", KindBootstrap},
		{"# c\n---\napiVersion: v1\nkind: Service", KindKubernetes},
		{"listeners: []", KindRunner},
		{`"@type": type.googleapis.com/xds.type.v3.TypedStruct`, KindPluginConfig},
		{"host: a.b\nport: 1", KindService},
		{"stat_prefix: x\ncodec: dubbo", KindProxyConfig},
		{"foo: 1", KindUnknown},
		{"[1, 2]", KindUnknown},
		{"", KindUnknown},
	} {
		if got := Detect([]byte(tc.data)); got != tc.want {
			t.Errorf("Detect(%q) = %s, want %s", tc.data, got, tc.want)
		}
	}
}

func TestCheckPluginAndProxyConfigFiles(t *testing.T) {
	for _, tc := range []struct {
		name, data, want string
	}{
		{"typed struct", "\"@type\": type.googleapis.com/xds.type.v3.TypedStruct\ntype_url: type.googleapis.com/breeze.v1.ProxyConfig\nvalue: {stat_prefix: x, codec: dubbo, clusters: [{name: c, endpoints: [{address: 10.0.0.1, port: 1}]}], route_config: {routes: [{route: {cluster: c}}]}}\n", ""},
		{"typed struct, bad endpoint", "\"@type\": type.googleapis.com/xds.type.v3.TypedStruct\ntype_url: type.googleapis.com/breeze.v1.ProxyConfig\nvalue: {stat_prefix: x, codec: dubbo, clusters: [{name: c, endpoints: [{address: a.b, port: 1}]}], route_config: {routes: [{route: {cluster: c}}]}}\n",
			`f.yaml: value.clusters[0].endpoints[0].address: "a.b": a STATIC cluster needs a literal IP address`},
		{"typed struct, wrong type", "\"@type\": type.googleapis.com/xds.type.v3.TypedStruct\ntype_url: type.googleapis.com/envoy.config.cluster.v3.Cluster\nvalue: {name: x}\n",
			`want type.googleapis.com/breeze.v1.ProxyConfig`},
		{"proxy config", "stat_prefix: x\ncodec: dubbo\nclusters: [{name: c, endpoints: [{address: 10.0.0.1, port: 1}]}]\nroute_config: {routes: [{route: {cluster: c}}]}\n", ""},
		{"proxy config, unknown codec", "stat_prefix: x\ncodec: dubo\nclusters: [{name: c, endpoints: [{address: 10.0.0.1, port: 1}]}]\nroute_config: {routes: [{route: {cluster: c}}]}\n",
			`f.yaml: codec: "dubo"`},
		{"runner", "listeners: [{name: a, address: '127.0.0.1:1', proxy: {stat_prefix: x, codec: dubbo}}]\n", ""},
		{"runner, bad address", "listeners: [{name: a, address: '127.0.0.1', proxy: {stat_prefix: x, codec: dubbo}}]\n", `f.yaml: listeners[0].address`},
		{"unknown", "foo: 1\n", "cannot tell what this is"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(File{"f.yaml", []byte(tc.data)}).Err()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// A deprecated field is a warning in every kind of file that holds a proxy
// config, at its path in that file; the file is still valid.
func TestCheckDeprecatedConnectTimeout(t *testing.T) {
	const cluster = "{name: c, connect_timeout: 1s, endpoints: [{address: 10.0.0.1, port: 1}]}"
	const why = "1s: deprecated and ignored: Envoy's plainText cluster sets the connect timeout of every upstream connection Breeze opens (breeze run: 5s); set connect_timeout on the plainText cluster instead, and remove this field"
	for _, tc := range []struct {
		name, data, want string
	}{
		{"typed struct", "\"@type\": type.googleapis.com/xds.type.v3.TypedStruct\ntype_url: type.googleapis.com/breeze.v1.ProxyConfig\nvalue: {stat_prefix: x, codec: dubbo, clusters: [" + cluster + "], route_config: {routes: [{route: {cluster: c}}]}}\n",
			"f.yaml: value.clusters[0].connect_timeout: " + why},
		{"proxy config", "stat_prefix: x\ncodec: dubbo\nclusters: [" + cluster + "]\nroute_config: {routes: [{route: {cluster: c}}]}\n",
			"f.yaml: clusters[0].connect_timeout: " + why},
		{"runner", "listeners: [{name: a, address: '127.0.0.1:1', proxy: {stat_prefix: x, codec: dubbo, clusters: [" + cluster + "]}}]\n",
			"f.yaml: listeners[0].proxy.clusters[0].connect_timeout: " + why},
		{"service", "name: greeter\nhost: greeter.default.svc.cluster.local\nvip: 10.96.0.10\nport: 20880\nprotocol: dubbo\nclusters: [" + cluster + "]\n",
			"f.yaml: clusters[0].connect_timeout: " + why},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := Check(File{"f.yaml", []byte(tc.data)})
			if err := f.Err(); err != nil {
				t.Fatal(err)
			}
			if len(f.Warnings) != 1 || f.Warnings[0].Error() != tc.want {
				t.Fatalf("warnings %q\nwant [%q]", f.Warnings, tc.want)
			}
		})
	}
}

func TestSnakeField(t *testing.T) {
	for in, want := range map[string]string{
		"StaticResources":           "static_resources",
		"Listeners[2]":              "listeners[2]",
		"Http2ProtocolOptions":      "http2_protocol_options",
		"TlsMinimumProtocolVersion": "tls_minimum_protocol_version",
		"Ipv4Compat":                "ipv4_compat",
		"Labels[a]":                 "labels[a]",
	} {
		if got := snakeField(in); got != want {
			t.Errorf("snakeField(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSplitDocs(t *testing.T) {
	docs := splitDocs([]byte("# header\n---\na: 1\n---\n# only a comment\n---\nb: 2\n--- # c\nc: 3\n"))
	if len(docs) != 3 || !strings.Contains(string(docs[0]), "a: 1") || !strings.Contains(string(docs[2]), "c: 3") {
		t.Fatalf("got %q", docs)
	}
}

// Envoy also takes the Go filter's own config as a TypedStruct; paths then
// run through its value.
func TestBootstrapGolangConfigAsTypedStruct(t *testing.T) {
	const bs = `static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 0.0.0.0, port_value: 1}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.golang
        typed_config:
          "@type": type.googleapis.com/xds.type.v3.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.network.golang.v3alpha.Config
          value:
            is_terminal_filter: false
            library_id: breeze
            library_path: /x/breeze.so
            plugin_name: breeze
            plugin_config:
              "@type": type.googleapis.com/xds.type.v3.TypedStruct
              type_url: type.googleapis.com/breeze.v1.ProxyConfig
              value: {stat_prefix: s, codec: dubbo}
  clusters:
  - {name: plainText, type: ORIGINAL_DST, lb_policy: CLUSTER_PROVIDED, connect_timeout: 1s}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 2}}}
`
	_, f := CheckBootstrap([]byte(bs))
	const want = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.value.is_terminal_filter: false: must be true"
	if err := f.Err(); err == nil || !strings.Contains(err.Error(), want) || len(f.Errors) != 1 {
		t.Fatalf("got %v, want only %q", err, want)
	}
	_, f = CheckBootstrap([]byte(strings.Replace(bs, "library_id: breeze", "library_idd: breeze", 1)))
	if err := f.Err(); err == nil || !strings.Contains(err.Error(), "typed_config.value.library_idd: unknown field") {
		t.Fatalf("got %v", err)
	}
}

// Durations are checked in the forms their reader takes: istiod (an
// EnvoyFilter, its patch values, the proxy.istio.io/config annotation)
// and Breeze (every ProxyConfig, wherever it sits) read Go's "100ms" and
// "15m" as Istio documents them; Envoy (a bootstrap, outside Breeze's
// plugin_config) only protobuf's "1.5s".
func TestDurationsAsTheirReadersTakeThem(t *testing.T) {
	accepted := []struct {
		name, file, old, new string
		check                func([]byte) Findings
	}{
		{"EnvoyFilter patch value", filepath.Join(envoyConfigDir, "istio", "greeter-envoyfilters.yaml"), "connect_timeout: 10s", "connect_timeout: 500ms",
			func(b []byte) Findings { _, f := CheckEnvoyFilters(b); return f }},
		{"Breeze config in an EnvoyFilter", filepath.Join(envoyConfigDir, "istio", "greeter-envoyfilters.yaml"), "request_timeout: 3s", "request_timeout: 1m30s",
			func(b []byte) Findings { _, f := CheckEnvoyFilters(b); return f }},
		{"proxy.istio.io/config", filepath.Join(envoyConfigDir, "istio", "demo.yaml"), "proxyMetadata:\n            GODEBUG: cgocheck=0\n", "proxyMetadata:\n            GODEBUG: cgocheck=0\n          drainDuration: 1m\n",
			func(b []byte) Findings { _, f := CheckEnvoyFilters(b); return f }},
		{"Breeze config in a bootstrap", filepath.Join(envoyConfigDir, "envoy.yaml"), "request_timeout: 3s", "request_timeout: 100ms",
			func(b []byte) Findings { _, f := CheckBootstrap(b); return f }},
		{"service description", filepath.Join(envoyConfigDir, "istio", "greeter.yaml"), "request_timeout: 3s", "request_timeout: 2500ms",
			func(b []byte) Findings { return Check(File{"greeter.yaml", b}) }},
	}
	for _, tc := range accepted {
		t.Run(tc.name, func(t *testing.T) {
			orig := string(readFile(t, tc.file))
			changed := strings.Replace(orig, tc.old, tc.new, 1)
			if changed == orig {
				t.Fatalf("%q is not in %s", tc.old, tc.file)
			}
			if err := tc.check([]byte(changed)).Err(); err != nil {
				t.Fatal(err)
			}
		})
	}
	runMistakes(t, filepath.Join(envoyConfigDir, "envoy.yaml"), func(b []byte) Findings { _, f := CheckBootstrap(b); return f }, []mistake{
		{name: "Go duration in Envoy's own field", old: "connect_timeout: 1s", new: "connect_timeout: 1000ms",
			want: `static_resources.clusters[0].connect_timeout: "1000ms": Envoy reads durations only as seconds with an "s": write "1s"`},
	})
}

// A Breeze patch must select the sidecars of a release Breeze is built
// for; with an Istio release to check for (validate --istio), that one's.
func TestProxyVersionPins(t *testing.T) {
	shipped := string(readFile(t, filepath.Join(envoyConfigDir, "istio", "greeter-envoyfilters.yaml")))
	const pin = `proxyVersion: ^1\.28\.`
	if strings.Count(shipped, pin) != 3 {
		t.Fatalf("the shipped EnvoyFilters have %d patches pinned %q, want 3: adjust this test", strings.Count(shipped, pin), pin)
	}
	const path = "greeter-envoyfilters.yaml: EnvoyFilter greeter-breeze-outbound: spec.configPatches[0].match.proxy.proxyVersion: "
	pinned := func(pv string) string { return strings.ReplaceAll(shipped, pin, "proxyVersion: "+pv) }
	for _, tc := range []struct {
		name, files, istio string
		errs, warns        []string // the first finding of each, in the file's order
	}{
		{name: "shipped, any release", files: shipped},
		{name: "shipped, for 1.28", files: shipped, istio: "1.28"},
		{name: "shipped, for 1.31", files: shipped, istio: "1.31",
			errs: []string{path + `"^1\\.28\\." does not select Istio 1.31 sidecars, which these files are checked for (--istio 1.31): pin "^1\\.31\\."`}},
		{name: "pinned to 1.31, for 1.31", files: pinned(`^1\.31\.`), istio: "1.31"},
		{name: "pinned to 1.31, any release", files: pinned(`^1\.31\.`)},
		{name: "pinned to a release without a build", files: pinned(`^1\.29\.`),
			errs: []string{path + `"^1\\.29\\." selects the sidecars of no Istio release Breeze is built for (Istio 1.28 (Envoy 1.36), Istio 1.31 (Envoy 1.39)): breeze.so works only in the Envoy it was built for; pin "^1\\.28\\." (Istio 1.28: Envoy 1.36) or "^1\\.31\\." (Istio 1.31: Envoy 1.39)`}},
		{name: "pinned to both, for 1.31", files: pinned(`^1\.(28|31)\.`), istio: "1.31",
			warns: []string{path + `"^1\\.(28|31)\\." also selects the sidecars of Istio 1.28 (Envoy 1.36): each needs breeze.so built for its own Envoy at this library_path; pin "^1\\.31\\." to patch Istio 1.31's only`}},
		{name: "unknown release", files: shipped, istio: "1.29",
			errs: []string{`greeter-envoyfilters.yaml: no Breeze build for Istio "1.29": Breeze is built for Istio 1.28 (Envoy 1.36), Istio 1.31 (Envoy 1.39)`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := CheckFilesWith(Options{Istio: tc.istio}, File{Name: "greeter-envoyfilters.yaml", Data: []byte(tc.files)})
			first := func(es []error) []string {
				if len(es) == 0 {
					return nil
				}
				return []string{es[0].Error()}
			}
			if got := first(rs[0].Errors); !slices.Equal(got, tc.errs) {
				t.Errorf("first error %q\nwant %q\n(all: %q)", got, tc.errs, rs[0].Errors)
			}
			if got := first(rs[0].Warnings); !slices.Equal(got, tc.warns) {
				t.Errorf("first warning %q\nwant %q\n(all: %q)", got, tc.warns, rs[0].Warnings)
			}
		})
	}
}

// TestSameNameAcrossFiles: one description per port of a multi-port
// Service, rendered without names of their own, gives EnvoyFilters of one
// name (the host's first label), of which kubectl keeps the last applied:
// the check says so; with a name per port it passes.
func TestSameNameAcrossFiles(t *testing.T) {
	renderPort := func(name string, port uint32, codec string) []byte {
		t.Helper()
		efs, err := Render(&Service{Host: "shop.demo.svc.cluster.local", Name: name, VIP: "10.96.0.9", Port: port, Protocol: codec,
			Clients:  map[string]string{"app": "consumer"},
			Outbound: &breezev1.ProxyConfig{Xds: &breezev1.XdsSource{Address: "xds:15010", RouteConfigName: RouteConfigName("shop.demo.svc.cluster.local", port)}}})
		if err != nil {
			t.Fatal(err)
		}
		y, err := MarshalEnvoyFilters(efs)
		if err != nil {
			t.Fatal(err)
		}
		return y
	}
	err := Check(File{"dubbo.yaml", renderPort("", 20880, "dubbo")}, File{"thrift.yaml", renderPort("", 9090, "thrift")}).Err()
	want := `thrift.yaml: EnvoyFilter shop-breeze-outbound: metadata.name: "shop-breeze-outbound": dubbo.yaml: EnvoyFilter shop-breeze-outbound has the same name in namespace "demo"`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("two ports rendered under one name: %v; want an error containing %s", err, want)
	}
	t.Log(err)
	if err := Check(File{"dubbo.yaml", renderPort("shop-20880", 20880, "dubbo")}, File{"thrift.yaml", renderPort("shop-9090", 9090, "thrift")}).Err(); err != nil {
		t.Fatalf("two ports rendered with a name each: %v, want no error", err)
	}
}
