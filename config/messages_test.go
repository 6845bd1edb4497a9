package config

import (
	"strings"
	"testing"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// goldenRunner is a valid runner file; each case below makes one mistake
// in it.
const goldenRunner = `admin_address: 127.0.0.1:15000
listeners:
- name: dubbo-demo
  address: 127.0.0.1:20880
  proxy:
    stat_prefix: demo
    codec: dubbo
    request_timeout: 3s
    route_config:
      routes:
      - route: {cluster: greeter}
    clusters:
    - name: greeter
      lb_policy: ROUND_ROBIN
      endpoints:
      - {address: 127.0.0.1, port: 20001}
`

// The exact text of the errors an operator reads most: each says what is
// wrong and how to write it instead. The text is part of the interface.
func TestGoldenMessages(t *testing.T) {
	if _, err := ParseRunner("breeze.yaml", []byte(goldenRunner)); err != nil {
		t.Fatalf("the base file: %v", err)
	}
	for _, tc := range []struct{ name, old, new, want string }{
		{"duration", "request_timeout: 3s", "request_timeout: 3 seconds",
			`breeze.yaml: listeners[0].proxy.request_timeout: "3 seconds": not a duration: write a number and a unit, as in 300ms, 1.5s, 15m or 1h30m (units: ns, us, ms, s, m, h)`},
		{"duration as a number", "request_timeout: 3s", "request_timeout: 3",
			`breeze.yaml: listeners[0].proxy.request_timeout: 3: a duration is a string with a unit: write "3s"`},
		{"enum", "lb_policy: ROUND_ROBIN", "lb_policy: ROUNDROBIN",
			`breeze.yaml: listeners[0].proxy.clusters[0].lb_policy: "ROUNDROBIN": lb_policy must be one of ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV; did you mean ROUND_ROBIN?`},
		{"enum in lower case", "lb_policy: ROUND_ROBIN", "lb_policy: least_request",
			`breeze.yaml: listeners[0].proxy.clusters[0].lb_policy: "least_request": lb_policy must be one of ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV; did you mean LEAST_REQUEST?`},
		{"enum nothing near", "lb_policy: ROUND_ROBIN", "lb_policy: FASTEST",
			`breeze.yaml: listeners[0].proxy.clusters[0].lb_policy: "FASTEST": lb_policy must be one of ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV`},
		{"enum written camelCase", "lb_policy: ROUND_ROBIN", "lbPolicy: ROUNDROBIN",
			`breeze.yaml: listeners[0].proxy.clusters[0].lb_policy: "ROUNDROBIN": lb_policy must be one of ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV; did you mean ROUND_ROBIN?`},
		{"unknown field", "lb_policy: ROUND_ROBIN", "lb_polcy: ROUND_ROBIN",
			`breeze.yaml: listeners[0].proxy.clusters[0].lb_polcy: unknown field (breeze.v1.Cluster has no field "lb_polcy"); did you mean lb_policy?`},
		{"unknown field camelCase", "request_timeout: 3s", "requestTimout: 3s",
			`breeze.yaml: listeners[0].proxy.requestTimout: unknown field (breeze.v1.ProxyConfig has no field "requestTimout"); did you mean requestTimeout?`},
		{"unknown field nothing near", "lb_policy: ROUND_ROBIN", "balancer: ROUND_ROBIN",
			`breeze.yaml: listeners[0].proxy.clusters[0].balancer: unknown field (breeze.v1.Cluster has no field "balancer")`},
		{"YAML syntax", "    codec: dubbo\n", "    codec: dubbo\n   stray: x\n",
			`breeze.yaml: line 8, column 4: YAML syntax error: did not find expected key (while parsing a block mapping that starts at line 3, column 3)`},
		{"YAML unclosed quote", "    codec: dubbo\n", "    codec: 'dubbo\n",
			`breeze.yaml: line 17, column 1: YAML syntax error: found unexpected end of stream (while scanning a quoted scalar that starts at line 7, column 12)`},
		{"two listeners on one address", "", "- name: dubbo-two\n  address: 127.0.0.1:20880\n  proxy: {stat_prefix: two, codec: dubbo, route_config: {routes: [{route: {cluster: c}}]}, clusters: [{name: c, endpoints: [{address: 127.0.0.1, port: 1}]}]}\n",
			`breeze.yaml: listeners[1].address: "127.0.0.1:20880": listeners[0] (dubbo-demo) already listens on 127.0.0.1:20880: the second bind would fail with "address already in use"; give each listener an address of its own`},
		{"a listener on every interface and one on loopback", "", "- name: dubbo-two\n  address: :20880\n  proxy: {stat_prefix: two, codec: dubbo, route_config: {routes: [{route: {cluster: c}}]}, clusters: [{name: c, endpoints: [{address: 127.0.0.1, port: 1}]}]}\n",
			`breeze.yaml: listeners[1].address: ":20880": listeners[0] (dubbo-demo) already listens on 127.0.0.1:20880: the second bind would fail with "address already in use"; give each listener an address of its own`},
		{"the admin server on a listener's address", "admin_address: 127.0.0.1:15000", "admin_address: 0.0.0.0:20880",
			`breeze.yaml: admin_address: "0.0.0.0:20880": listeners[0] (dubbo-demo) already listens on 127.0.0.1:20880: the second bind would fail with "address already in use"; give each listener an address of its own`},
		{"the plugin's metrics server on the admin address", "    codec: dubbo\n", "    codec: dubbo\n    metrics: {address: '127.0.0.1:15000'}\n",
			`breeze.yaml: listeners[0].proxy.metrics.address: "127.0.0.1:15000": admin_address already listens on 127.0.0.1:15000: the second bind would fail with "address already in use"; give each listener an address of its own`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := goldenRunner + tc.new
			if tc.old != "" {
				in = strings.Replace(goldenRunner, tc.old, tc.new, 1)
			}
			_, err := ParseRunner("breeze.yaml", []byte(in))
			if err == nil || err.Error() != tc.want {
				t.Errorf("got  %v\nwant %s", err, tc.want)
			}
		})
	}
}

// Addresses that do not clash: other ports, other hosts of one family,
// port 0, an IPv4 wildcard next to an IPv6 address.
func TestListenersOnDistinctAddresses(t *testing.T) {
	for _, pair := range [][2]string{
		{"127.0.0.1:20880", "127.0.0.1:20881"},
		{"127.0.0.1:20880", "127.0.0.2:20880"},
		{"127.0.0.1:0", "127.0.0.1:0"},
		{"0.0.0.0:20880", "[::1]:20880"},
	} {
		in := strings.Replace(goldenRunner, "address: 127.0.0.1:20880", "address: '"+pair[0]+"'", 1) +
			"- name: two\n  address: '" + pair[1] + "'\n  proxy: {stat_prefix: two, codec: dubbo, route_config: {routes: [{route: {cluster: c}}]}, clusters: [{name: c, endpoints: [{address: 127.0.0.1, port: 1}]}]}\n"
		if _, err := ParseRunner("breeze.yaml", []byte(in)); err != nil {
			t.Errorf("%s and %s: %v", pair[0], pair[1], err)
		}
	}
}

// Envoy reads durations only in protobuf's form: the error says so, with
// the value converted when it is a Go duration.
func TestGoldenEnvoyDurations(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"connect_timeout": "1000ms"}`, `p.connect_timeout: "1000ms": Envoy reads durations only as seconds with an "s": write "1s"`},
		{`{"connect_timeout": "15m"}`, `p.connect_timeout: "15m": Envoy reads durations only as seconds with an "s": write "900s"`},
		{`{"connect_timeout": "1x"}`, `p.connect_timeout: "1x": not a duration: Envoy reads seconds with an "s", as in 5s, 0.25s or 900s`},
		{`{"connect_timeout": true}`, `p.connect_timeout: true: not a duration: Envoy reads seconds with an "s", as in 5s, 0.25s or 900s`},
	} {
		err := DecodeStrict(jsonValue(t, tc.in), &breezev1.Cluster{}, StrictOptions{Path: "p", KeysAsWritten: true})
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s:\ngot  %v\nwant %s", tc.in, err, tc.want)
		}
	}
}

// A Validate error for an enum number no value has lists the values.
func TestGoldenEnumNumber(t *testing.T) {
	c := validConfig()
	c.Clusters[0].LbPolicy = 9
	if err := Validate(c); err == nil || err.Error() != `clusters[0].lb_policy: 9: lb_policy must be one of ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV` {
		t.Errorf("got %v", err)
	}
}

// Every rejected value is reported in one run, each on its own line: not
// only the first.
func TestEveryRejectedValue(t *testing.T) {
	in := strings.NewReplacer("request_timeout: 3s", "request_timeout: 3 seconds", "lb_policy: ROUND_ROBIN", "lb_policy: ROUNDROBIN").Replace(goldenRunner) +
		"- name: two\n  address: 127.0.0.1:20881\n  proxy: {clusters: [{type: LOGICAL_DNS}]}\n"
	_, err := ParseRunner("breeze.yaml", []byte(in))
	want := `breeze.yaml: listeners[0].proxy.clusters[0].lb_policy: "ROUNDROBIN": lb_policy must be one of ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV; did you mean ROUND_ROBIN?
breeze.yaml: listeners[0].proxy.request_timeout: "3 seconds": not a duration: write a number and a unit, as in 300ms, 1.5s, 15m or 1h30m (units: ns, us, ms, s, m, h)
breeze.yaml: listeners[1].proxy.clusters[0].type: "LOGICAL_DNS": type must be one of STATIC, STRICT_DNS, EDS`
	if err == nil || err.Error() != want {
		t.Errorf("got\n%v\nwant\n%s", err, want)
	}
}
