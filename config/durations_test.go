package config

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// durationField is a Duration field reachable from a message: the JSON
// path to set it and the way back to its value.
type durationField struct {
	path []protoreflect.FieldDescriptor
}

func (f durationField) String() string {
	var names []string
	for _, fd := range f.path {
		names = append(names, string(fd.Name()))
	}
	return strings.Join(names, ".")
}

// json builds the JSON object that sets the field to s (one element for
// lists, key "k" for maps) and nothing else.
func (f durationField) json(s string) any {
	var v any = s
	for i := len(f.path) - 1; i >= 0; i-- {
		fd := f.path[i]
		switch {
		case fd.IsMap():
			v = map[string]any{"k": v}
		case fd.IsList():
			v = []any{v}
		}
		v = map[string]any{fd.JSONName(): v}
	}
	return v
}

// get reads the field back from m.
func (f durationField) get(m protoreflect.Message) *durationpb.Duration {
	for _, fd := range f.path {
		v := m.Get(fd)
		switch {
		case fd.IsMap():
			v = v.Map().Get(protoreflect.ValueOfString("k").MapKey())
		case fd.IsList():
			v = v.List().Get(0)
		}
		m = v.Message()
	}
	return m.Interface().(*durationpb.Duration)
}

// durationFields lists every Duration field of md and of the messages it
// holds, so that a field added later is covered too.
func durationFields(md protoreflect.MessageDescriptor, prefix []protoreflect.FieldDescriptor, seen map[protoreflect.FullName]bool) []durationField {
	if seen[md.FullName()] {
		return nil
	}
	seen[md.FullName()] = true
	defer delete(seen, md.FullName())
	var out []durationField
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		sub := fd.Message()
		if fd.IsMap() {
			sub = fd.MapValue().Message()
		}
		if sub == nil {
			continue
		}
		path := append(append([]protoreflect.FieldDescriptor(nil), prefix...), fd)
		switch {
		case sub.FullName() == durationName:
			out = append(out, durationField{path})
		case !isWellKnown(sub):
			out = append(out, durationFields(sub, path, seen)...)
		}
	}
	return out
}

// Istio and Aeraki write durations as Go does (timeout: 100ms,
// baseEjectionTime: 15m): every Duration field of a runner file, and so of
// every ProxyConfig, takes them as well as protobuf's 1.5s.
func TestGoDurationsInEveryField(t *testing.T) {
	fields := durationFields((&breezev1.Runner{}).ProtoReflect().Descriptor(), nil, map[protoreflect.FullName]bool{})
	if len(fields) < 6 {
		t.Fatalf("found %d Duration fields (%v): the walk is broken", len(fields), fields)
	}
	for _, f := range fields {
		for in, want := range map[string]time.Duration{
			"100ms":  100 * time.Millisecond,
			"15m":    15 * time.Minute,
			"1h30m":  90 * time.Minute,
			"1.5s":   1500 * time.Millisecond,
			"300us":  300 * time.Microsecond,
			"1m0.5s": 60500 * time.Millisecond,
		} {
			js, err := json.Marshal(f.json(in))
			if err != nil {
				t.Fatal(err)
			}
			r := &breezev1.Runner{}
			if err := DecodeJSON(js, r); err != nil {
				t.Errorf("%s: %s: %v", f, in, err)
				continue
			}
			if got := f.get(r.ProtoReflect()).AsDuration(); got != want {
				t.Errorf("%s: %s: got %v, want %v", f, in, got, want)
			}
		}
	}
}

// The same through each way a ProxyConfig arrives in JSON: a runner file,
// a TypedStruct (Envoy's plugin_config), a filter config in a TypedStruct.
func TestGoDurationsInConfigs(t *testing.T) {
	r, err := ParseRunner("breeze.yaml", []byte(`
listeners:
- name: l
  address: 127.0.0.1:0
  proxy:
    stat_prefix: s
    codec: dubbo
    request_timeout: 100ms
    idle_timeout: 5m
    route_config:
      routes:
      - route: {cluster: c}
        timeout: 1m30s
    clusters:
    - name: c
      type: STRICT_DNS
      dns_refresh_rate: 1h
      endpoints: [{address: greeter.local, port: 20880}]
`))
	if err != nil {
		t.Fatal(err)
	}
	p := r.GetListeners()[0].GetProxy()
	for name, got := range map[string]*durationpb.Duration{
		"request_timeout": p.GetRequestTimeout(), "idle_timeout": p.GetIdleTimeout(),
		"timeout": p.GetRouteConfig().GetRoutes()[0].GetTimeout(), "dns_refresh_rate": p.GetClusters()[0].GetDnsRefreshRate(),
	} {
		want := map[string]time.Duration{"request_timeout": 100 * time.Millisecond, "idle_timeout": 5 * time.Minute,
			"timeout": 90 * time.Second, "dns_refresh_rate": time.Hour}[name]
		if got.AsDuration() != want {
			t.Errorf("%s: got %v, want %v", name, got.AsDuration(), want)
		}
	}

	pc, err := ParseAny(typedStructAny(t, false, ProxyConfigTypeURL,
		`{"stat_prefix": "s", "codec": "dubbo", "request_timeout": "250ms", "xds": {"address": "x:1", "initial_fetch_timeout": "2m"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if pc.GetRequestTimeout().AsDuration() != 250*time.Millisecond || pc.GetXds().GetInitialFetchTimeout().AsDuration() != 2*time.Minute {
		t.Fatalf("got %v", pc)
	}

	// A TypedStruct's value is decoded by whoever reads it: its JSON stays
	// as written, and the reader (here UnpackFilterConfig) accepts it.
	inner := &breezev1.ProxyConfig{}
	if err := UnpackFilterConfig(typedStructAny(t, true, ProxyConfigTypeURL, `{"request_timeout": "1m"}`), inner); err != nil || inner.GetRequestTimeout().AsDuration() != time.Minute {
		t.Fatalf("got %v, %v", inner, err)
	}
}

// Inside Any values, in lists and in maps; not inside a TypedStruct's value.
func TestGoDurationsInsideAny(t *testing.T) {
	pc := &breezev1.ProxyConfig{}
	err := DecodeJSON([]byte(`{
		"filters": [{"name": "f", "typed_config": {"@type": "type.googleapis.com/breeze.v1.Runner",
			"listeners": [{"proxy": {"request_timeout": "15m"}}]}}],
		"route_config": {"routes": [{"typed_per_filter_config": {
			"d": {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "100ms"},
			"t": {"@type": "type.googleapis.com/xds.type.v3.TypedStruct", "value": {"timeout": "1m"}}}}]}}`), pc)
	if err != nil {
		t.Fatal(err)
	}
	r := &breezev1.Runner{}
	if err := pc.GetFilters()[0].GetTypedConfig().UnmarshalTo(r); err != nil || r.GetListeners()[0].GetProxy().GetRequestTimeout().AsDuration() != 15*time.Minute {
		t.Fatalf("Any of a Runner: %v, %v", r, err)
	}
	per := pc.GetRouteConfig().GetRoutes()[0].GetTypedPerFilterConfig()
	d := &durationpb.Duration{}
	if err := per["d"].UnmarshalTo(d); err != nil || d.AsDuration() != 100*time.Millisecond {
		t.Fatalf("Any of a Duration: %v, %v", d, err)
	}
	m, err := anypb.UnmarshalNew(per["t"], proto.UnmarshalOptions{})
	if err != nil || !strings.Contains(protoString(m), `"1m"`) {
		t.Fatalf("TypedStruct value: %v, %v: want it as written", m, err)
	}
}

func protoString(m proto.Message) string {
	b, _ := protojson.Marshal(m)
	return string(b)
}

// What neither Go nor protobuf reads is still an error at its path, and
// DecodeStrict without GoDurations (what Envoy reads) keeps protobuf's form.
func TestGoDurationsErrors(t *testing.T) {
	for _, in := range []string{`"1x"`, `"m"`, `""`, `5`} {
		err := DecodeJSON([]byte(`{"request_timeout": `+in+`}`), &breezev1.ProxyConfig{})
		if err == nil || !strings.HasPrefix(err.Error(), "request_timeout: ") {
			t.Errorf("%s: got %v, want an error at request_timeout", in, err)
		}
	}
	err := DecodeStrict(jsonValue(t, `{"request_timeout": "100ms"}`), &breezev1.ProxyConfig{}, StrictOptions{})
	if err == nil || !strings.HasPrefix(err.Error(), "request_timeout: ") {
		t.Errorf("without GoDurations: got %v, want an error", err)
	}
	// Beyond Go's range, protobuf's form still works.
	pc := &breezev1.ProxyConfig{}
	if err := DecodeJSON([]byte(`{"request_timeout": "315576000000s"}`), pc); err != nil || pc.GetRequestTimeout().GetSeconds() != 315576000000 {
		t.Errorf("protobuf's maximum: %v, %v", pc, err)
	}
}

func TestProtoDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                        "0s",
		100 * time.Millisecond:   "0.1s",
		-1500 * time.Millisecond: "-1.5s",
		time.Nanosecond:          "0.000000001s",
		15 * time.Minute:         "900s",
		math.MinInt64:            "-9223372036.854775808s",
		math.MaxInt64:            "9223372036.854775807s",
	} {
		if got := protoDuration(d); got != want {
			t.Errorf("%v: got %q, want %q", d, got, want)
		}
	}
}
