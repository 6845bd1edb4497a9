package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

func readmeRunner() *breezev1.Runner {
	return &breezev1.Runner{
		AdminAddress: "127.0.0.1:15000",
		Listeners: []*breezev1.Listener{
			{Name: "dubbo-greeter", Address: "127.0.0.1:20880", Proxy: validConfig()},
		},
	}
}

// yamlBlocks returns the ```yaml blocks of the README, in order.
func yamlBlocks(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
		blocks = append(blocks, m[1])
	}
	if len(blocks) != 2 {
		t.Fatalf("README has %d yaml blocks, want 2 (runner file, Envoy filter)", len(blocks))
	}
	return blocks
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadRunnerREADMERoundTrip(t *testing.T) {
	path := writeFile(t, "breeze.yaml", yamlBlocks(t)[0])
	got, err := LoadRunner(path)
	if err != nil {
		t.Fatalf("LoadRunner: %v", err)
	}
	if want := readmeRunner(); !proto.Equal(got, want) {
		t.Fatalf("LoadRunner = %v\nwant %v", got, want)
	}

	// Written back out, as JSON and as YAML, it reads the same.
	js, err := protojson.MarshalOptions{UseProtoNames: true, Multiline: true}.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	y, err := yaml.JSONToYAML(js)
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"breeze.json": string(js), "again.yaml": string(y)} {
		again, err := LoadRunner(writeFile(t, name, content))
		if err != nil {
			t.Fatalf("%s: LoadRunner: %v", name, err)
		}
		if !proto.Equal(again, got) {
			t.Fatalf("%s: round trip = %v\nwant %v", name, again, got)
		}
	}
}

// The README's Envoy filter: its plugin_config, read as Envoy's JSON form of
// an Any, parses and validates.
func TestREADMEPluginConfig(t *testing.T) {
	js, err := yaml.YAMLToJSON([]byte(yamlBlocks(t)[1]))
	if err != nil {
		t.Fatal(err)
	}
	var filters []struct {
		Name        string `json:"name"`
		TypedConfig struct {
			PluginConfig json.RawMessage `json:"plugin_config"`
		} `json:"typed_config"`
	}
	if err := json.Unmarshal(js, &filters); err != nil {
		t.Fatal(err)
	}
	if len(filters) != 1 || filters[0].Name != "envoy.filters.network.golang" {
		t.Fatalf("filters = %+v", filters)
	}
	a := &anypb.Any{}
	if err := protojson.Unmarshal(filters[0].TypedConfig.PluginConfig, a); err != nil {
		t.Fatal(err)
	}
	c, err := ParseAny(a)
	if err != nil {
		t.Fatalf("ParseAny: %v", err)
	}
	if err := Validate(c); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if w := c.GetRouteConfig().GetRoutes()[1].GetRoute().GetWeightedClusters().GetClusters(); w[0].GetWeight() != 20 || w[1].GetWeight() != 80 {
		t.Fatalf("weights = %v", w)
	}
}

func TestLoadRunnerErrors(t *testing.T) {
	const proxy = `
    stat_prefix: p
    codec: dubbo
    route_config:
      routes:
      - route: {cluster: c}
    clusters:
    - name: c
      endpoints: [{address: 127.0.0.1, port: 1}]`
	cases := []struct {
		name, file, content string
		want                []string // substrings of the error
		n                   int      // errors reported; 0: one per want
	}{
		{"yaml syntax", "r.yaml", "listeners: [", []string{"r.yaml: "}, 0},
		{"not an object", "r.yaml", "- a\n- b", []string{"r.yaml: want an object (breeze.v1.Runner), got a list"}, 0},
		{"empty file", "r.yaml", "", []string{"r.yaml: want an object (breeze.v1.Runner), got nothing"}, 0},
		{"listeners not a list", "r.yaml", "listeners: 5", []string{"r.yaml: listeners: syntax error: unexpected token 5"}, 0},
		{"unknown fields", "r.yaml", `
admin: 127.0.0.1:1
listeners:
- name: l
  address: 127.0.0.1:1
  proxy:
    stat_prefix: p
    codec: dubbo
    clusterz: []
    route_config:
      routes:
      - route: {cluster: c, subsets: {version: v1}}
`, []string{
			`r.yaml: admin: unknown field`,
			`r.yaml: listeners[0].proxy.clusterz: unknown field`,
			`r.yaml: listeners[0].proxy.route_config.routes[0].route.subsets: unknown field`,
		}, 0},
		{"unknown field in json", "r.json", `{"listeners": [{"name": "l", "adress": "127.0.0.1:1"}]}`,
			[]string{`r.json: listeners[0].adress: unknown field`}, 0},
		{"wrong type", "r.yaml", "listeners:\n- name: l\n  address: 127.0.0.1:1\n  proxy:\n    max_frame_size: big\n",
			[]string{`r.yaml: listeners[0].proxy.max_frame_size: `, `"big"`}, 1},
		{"bad enum", "r.yaml", "listeners:\n- proxy:\n    clusters: [{type: LOGICAL_DNS}]\n",
			[]string{`r.yaml: listeners[0].proxy.clusters[0].type: `, `"LOGICAL_DNS"`}, 1},
		{"duration", "r.yaml", "listeners:\n- proxy:\n    clusters: [{}, {connect_timeout: 1 second}]\n",
			[]string{`r.yaml: listeners[0].proxy.clusters[1].connect_timeout: `, `"1 second"`}, 1},
		{"map value", "r.yaml", "listeners:\n- proxy:\n    codec_params: {a: [1]}\n",
			[]string{`r.yaml: listeners[0].proxy.codec_params: `}, 1},
		{"oneof twice", "r.yaml", "listeners:\n- proxy:\n    route_config: {routes: [{route: {cluster: a, weighted_clusters: {}}}]}\n",
			[]string{`r.yaml: listeners[0].proxy.route_config.routes[0].route: `, `cluster_specifier`}, 1},
		{"no listeners", "r.yaml", "admin_address: 127.0.0.1:9901\n",
			[]string{`r.yaml: listeners: []: at least one listener is required`}, 0},
		{"listener checks", "r.yaml", `
admin_address: localhost
listeners:
- name: a
  address: 127.0.0.1:20880
  proxy:` + proxy + `
- name: a
  address: "127.0.0.1:http"
  proxy:` + proxy + `
- address: ":99999"
- name: b
  address: "[::1]:1"
  proxy:` + proxy + `
- name: c
  address: "no such host:1"
  proxy:` + proxy + `
- name: d
  address: ":0"
  proxy:` + proxy + `
`, []string{
			`r.yaml: listeners[1].name: "a": duplicate listener name (also listeners[0])`,
			`r.yaml: listeners[1].address: "127.0.0.1:http": port "http" is not a number 0–65535`,
			`r.yaml: listeners[2].name: "": required`,
			`r.yaml: listeners[2].address: ":99999": port "99999" is not a number 0–65535`,
			`r.yaml: listeners[2].proxy: <unset>: required`,
			`r.yaml: listeners[4].address: "no such host:1": host "no such host" is neither an IP address nor a host name`,
			`r.yaml: admin_address: "localhost": want host:port: missing port in address`,
		}, 0},
		{"proxy errors prefixed", "r.yaml", `
listeners:
- name: ok
  address: 127.0.0.1:1
  proxy:` + proxy + `
- name: bad
  address: 127.0.0.1:2
  proxy:
    stat_prefix: bad
    codec: ""
    route_config:
      routes:
      - match:
          metadata: [{key: method, regex: "("}]
        route: {cluster: nope}
      - route: {cluster: ring}
    clusters:
    - name: ring
      lb_policy: RING_HASH
      endpoints: [{address: 127.0.0.1, port: 1}]
`, []string{
			`r.yaml: listeners[1].proxy.codec: "": required`,
			"r.yaml: listeners[1].proxy.route_config.routes[0].match.metadata[0].regex: \"(\": error parsing regexp: missing closing ): `(`",
			`r.yaml: listeners[1].proxy.route_config.routes[0].route.cluster: "nope": no such cluster`,
			`r.yaml: listeners[1].proxy.clusters[0].hash_key: "": RING_HASH cluster needs a hash_key, or one on every route that targets it (none on listeners[1].proxy.route_config.routes[1])`,
		}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, tc.file, tc.content)
			r, err := LoadRunner(path)
			if err == nil {
				t.Fatalf("LoadRunner accepted it: %v", r)
			}
			errs := joined(err)
			n := tc.n
			if n == 0 {
				n = len(tc.want)
			}
			if len(errs) != n {
				t.Fatalf("got %d errors, want %d:\n%v", len(errs), n, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), strings.Replace(w, "r.yaml", path, 1)) &&
					!strings.Contains(err.Error(), strings.Replace(w, "r.json", path, 1)) {
					t.Errorf("error:\n%v\ndoes not contain %q", err, w)
				}
			}
			for _, e := range errs {
				if !strings.HasPrefix(e.Error(), path+": ") {
					t.Errorf("error %q does not start with the file name", e)
				}
			}
		})
	}
}

func TestLoadRunnerMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "absent.yaml")
	if _, err := LoadRunner(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("LoadRunner(%q) = %v", path, err)
	}
}

func TestParseRunnerNamesSource(t *testing.T) {
	_, err := ParseRunner("embedded demo config", []byte("listeners: [{name: a, address: 'x'}]"))
	if err == nil {
		t.Fatal("ParseRunner accepted it")
	}
	for _, e := range joined(err) {
		if !strings.HasPrefix(e.Error(), "embedded demo config: listeners[0].") {
			t.Errorf("error %q does not start with the source name and path", e)
		}
	}
}
