package config

import (
	"strings"
	"testing"

	udpatypev1 "github.com/cncf/xds/go/udpa/type/v1"
	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

func mustAny(t testing.TB, c *breezev1.ProxyConfig) *anypb.Any {
	t.Helper()
	a, err := ToAny(c)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func mustTypedStruct(t testing.TB, c *breezev1.ProxyConfig) *anypb.Any {
	t.Helper()
	a, err := ToTypedStruct(c)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// typedStructAny builds a TypedStruct Any of the given flavour around a JSON value.
func typedStructAny(t testing.TB, udpa bool, typeURL, valueJSON string) *anypb.Any {
	t.Helper()
	value := &structpb.Struct{}
	if err := protojson.Unmarshal([]byte(valueJSON), value); err != nil {
		t.Fatal(err)
	}
	var m proto.Message = &xdstypev3.TypedStruct{TypeUrl: typeURL, Value: value}
	if udpa {
		m = &udpatypev1.TypedStruct{TypeUrl: typeURL, Value: value}
	}
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestParseAnyForms(t *testing.T) {
	want := validConfig()
	js, err := protojson.Marshal(want) // JSON names (camelCase)
	if err != nil {
		t.Fatal(err)
	}
	own := mustAny(t, want)
	forms := map[string]*anypb.Any{
		"own Any":                     own,
		"own Any, other URL host":     {TypeUrl: "example.com/breeze.v1.ProxyConfig", Value: own.Value},
		"xds TypedStruct":             mustTypedStruct(t, want),
		"udpa TypedStruct":            typedStructAny(t, true, ProxyConfigTypeURL, string(js)),
		"xds TypedStruct, JSON names": typedStructAny(t, false, ProxyConfigTypeURL, string(js)),
	}
	for name, a := range forms {
		t.Run(name, func(t *testing.T) {
			got, err := ParseAny(a)
			if err != nil {
				t.Fatalf("ParseAny: %v", err)
			}
			if !proto.Equal(got, want) {
				t.Fatalf("ParseAny = %v\nwant %v", got, want)
			}
			if err := Validate(got); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
	if ts := mustTypedStruct(t, want); ts.TypeUrl != "type.googleapis.com/xds.type.v3.TypedStruct" {
		t.Errorf("ToTypedStruct type URL = %q", ts.TypeUrl)
	}
}

func TestParseAnyErrors(t *testing.T) {
	cases := []struct {
		name string
		a    *anypb.Any
		want []string
	}{
		{"nil", nil, []string{"plugin_config: missing"}},
		{"unknown type URL", &anypb.Any{TypeUrl: "type.googleapis.com/google.protobuf.Struct"},
			[]string{`unsupported type URL "type.googleapis.com/google.protobuf.Struct"`}},
		{"empty type URL", &anypb.Any{}, []string{`unsupported type URL ""`}},
		{"own Any, bad bytes", &anypb.Any{TypeUrl: ProxyConfigTypeURL, Value: []byte{0xff}},
			[]string{"plugin_config breeze.v1.ProxyConfig: "}},
		{"TypedStruct bad bytes", &anypb.Any{TypeUrl: "type.googleapis.com/xds.type.v3.TypedStruct", Value: []byte{0x0a, 0x05}},
			[]string{"plugin_config xds.type.v3.TypedStruct: "}},
		{"TypedStruct of another type", typedStructAny(t, false, "type.googleapis.com/breeze.v1.Runner", `{}`),
			[]string{`plugin_config xds.type.v3.TypedStruct: type_url "type.googleapis.com/breeze.v1.Runner": want type.googleapis.com/breeze.v1.ProxyConfig`}},
		{"TypedStruct without type_url", typedStructAny(t, true, "", `{}`),
			[]string{`plugin_config udpa.type.v1.TypedStruct: type_url "": want`}},
		{"unknown fields, all named by path", typedStructAny(t, false, ProxyConfigTypeURL, `{
			"stat_prefix": "x", "codecc": "dubbo",
			"route_config": {"routes": [{}, {"match": {"metadata": [{"key": "method", "exactt": "SayHello"}]}}]},
			"clusters": [{"name": "a", "endpoints": [{"address": "127.0.0.1", "port": 1, "labels": {"k": "v"}, "zone": "z"}]}]
		}`), []string{
			`clusters[0].endpoints[0].zone: unknown field`,
			`codecc: unknown field`,
			`route_config.routes[1].match.metadata[0].exactt: unknown field`,
		}},
		{"wrong value type", typedStructAny(t, false, ProxyConfigTypeURL, `{"clusters": [{"endpoints": [{"port": "http"}]}]}`),
			[]string{`plugin_config xds.type.v3.TypedStruct: value: clusters[0].endpoints[0].port: `, `"http"`}},
		{"bad duration", typedStructAny(t, false, ProxyConfigTypeURL, `{"idle_timeout": "5 minutes"}`),
			[]string{`value: idle_timeout: `, `"5 minutes"`}},
		{"oneof set twice", typedStructAny(t, false, ProxyConfigTypeURL, `{"route_config": {"routes": [{}, {"route": {"cluster": "a", "weighted_clusters": {}}}]}}`),
			[]string{`value: route_config.routes[1].route: `, `cluster_specifier`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseAny(tc.a)
			if err == nil {
				t.Fatalf("ParseAny accepted it: %v", c)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestTrimProtojsonPosition(t *testing.T) {
	for in, want := range map[string]string{
		`proto: (line 1:23): invalid value for uint32 field port: "http"`:        `invalid value for uint32 field port: "http"`,
		"proto:\u00a0(line 1:23): invalid value for uint32 field port: \"http\"": `invalid value for uint32 field port: "http"`,
		`proto: syntax error (line 1:1): unexpected token`:                       `syntax error: unexpected token`,
		`something else`: `something else`,
	} {
		if got := TrimProtojsonPosition(in); got != want {
			t.Errorf("TrimProtojsonPosition(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzParseAny feeds arbitrary bytes as the value of each accepted Any type:
// neither ParseAny nor Validate of what it returns may panic.
func FuzzParseAny(f *testing.F) {
	typeURLs := []string{
		ProxyConfigTypeURL,
		"type.googleapis.com/xds.type.v3.TypedStruct",
		"type.googleapis.com/udpa.type.v1.TypedStruct",
	}
	c := validConfig()
	f.Add(uint8(0), mustAny(f, c).Value)
	f.Add(uint8(1), mustTypedStruct(f, c).Value)
	f.Add(uint8(2), mustTypedStruct(f, c).Value)
	f.Add(uint8(1), typedStructAny(f, false, ProxyConfigTypeURL, `{"a": {"b": [1, null, true]}}`).Value)
	f.Add(uint8(0), []byte{})
	f.Add(uint8(1), []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, kind uint8, value []byte) {
		a := &anypb.Any{TypeUrl: typeURLs[int(kind)%len(typeURLs)], Value: value}
		c, err := ParseAny(a)
		if err != nil {
			return
		}
		_ = Validate(c)
	})
}
