package config

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"sigs.k8s.io/yaml"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"

	_ "github.com/breeze-mesh/breeze/filters/mutation"
	mutationv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/mutation/v1"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

const filtersBase = `
stat_prefix: s
codec: dubbo
clusters: [{name: c, endpoints: [{address: 10.0.0.1, port: 1}]}]
route_config: {routes: [{route: {cluster: c}}]}
`

func parseYAML(t *testing.T, y string) *breezev1.ProxyConfig {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	c := &breezev1.ProxyConfig{}
	if err := protojson.Unmarshal(js, c); err != nil {
		t.Fatal(err)
	}
	return c
}

const mutationsType = "type.googleapis.com/breeze.filters.mutation.v1.Mutations"

func TestFiltersValid(t *testing.T) {
	for name, y := range map[string]string{
		"no config":     "filters: [{name: mutation}]",
		"router last":   "filters: [{name: mutation}, {name: router}]",
		"own Any":       "filters: [{name: mutation, typed_config: {'@type': " + mutationsType + ", request: [{key: a, value: b}]}}]",
		"per route Any": "route_config: {routes: [{route: {cluster: c}, typed_per_filter_config: {mutation: {'@type': " + mutationsType + ", response: [{key: a, value: b}]}}}]}",
	} {
		c := parseYAML(t, filtersBase+y)
		if err := Validate(c); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// A filter's config may come as a TypedStruct (what Istio passes through),
// as the proxy config itself may.
func TestFilterConfigAsTypedStruct(t *testing.T) {
	value, _ := structpb.NewStruct(map[string]any{"request": []any{map[string]any{"key": "a", "value": "b"}}})
	a, err := anypb.New(&xdstypev3.TypedStruct{TypeUrl: mutationsType, Value: value})
	if err != nil {
		t.Fatal(err)
	}
	m := &mutationv1.Mutations{}
	if err := UnpackFilterConfig(a, m); err != nil || len(m.GetRequest()) != 1 || m.GetRequest()[0].GetKey() != "a" {
		t.Fatalf("unpacked %v, err %v", m, err)
	}
	c := parseYAML(t, filtersBase)
	c.Filters = []*breezev1.Filter{{Name: "mutation", TypedConfig: a}}
	if err := Validate(c); err != nil {
		t.Fatal(err)
	}
	// Round trip through the proxy config's own TypedStruct form.
	ts, err := ToTypedStruct(c)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseAny(ts)
	if err != nil {
		t.Fatal(err)
	}
	if err := Validate(back); err != nil {
		t.Fatal(err)
	}

	bad, _ := structpb.NewStruct(map[string]any{"requets": []any{}})
	a, _ = anypb.New(&xdstypev3.TypedStruct{TypeUrl: mutationsType, Value: bad})
	c.Filters = []*breezev1.Filter{{Name: "mutation", TypedConfig: a}}
	if err := Validate(c); err == nil || !strings.Contains(err.Error(), "filters[0].typed_config.value.requets: unknown field") {
		t.Fatalf("misspelt field in a TypedStruct: %v", err)
	}
}

func TestFiltersErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"filters: [{name: ratelimit}]", `filters[0].name: "ratelimit": no such filter (registered: [`},
		{"filters: [{name: ''}]", `filters[0].name: "": required`},
		{"filters: [{name: router}, {name: mutation}]", `filters[0].name: "router": the router is the terminal filter`},
		{"filters: [{name: mutation}, {name: mutation}]", `filters[1].name: "mutation": listed twice`},
		{"filters: [{name: mutation, typed_config: {'@type': " + mutationsType + ", request: [{value: b}]}}]",
			`filters[0].typed_config.request[0].key: "": must not be empty`},
		{"filters: [{name: mutation, typed_config: {'@type': type.googleapis.com/breeze.v1.KeyValue, key: a}}]",
			`filters[0].typed_config: type "type.googleapis.com/breeze.v1.KeyValue": want type.googleapis.com/breeze.filters.mutation.v1.Mutations or a TypedStruct of it`},
		{"route_config: {routes: [{route: {cluster: c}, typed_per_filter_config: {nope: {'@type': " + mutationsType + "}}}]}",
			`route_config.routes[0].typed_per_filter_config["nope"]: no such filter`},
		{"route_config: {routes: [{route: {cluster: c}, typed_per_filter_config: {mutation: {'@type': " + mutationsType + ", response: [{key: ''}]}}}]}",
			`route_config.routes[0].typed_per_filter_config["mutation"].response[0].key: "": must not be empty`},
	} {
		err := Validate(parseYAML(t, filtersBase+tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant %s", tc.yaml, err, tc.want)
		}
	}
}
