package route

import (
	"math"
	"slices"
	"strconv"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/breeze-mesh/breeze/codecs"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

func mustTable(t *testing.T, js string) *Table {
	t.Helper()
	rc := &breezev1.RouteConfiguration{}
	if err := protojson.Unmarshal([]byte(js), rc); err != nil {
		t.Fatal(err)
	}
	tb, err := Compile(rc)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func TestMatch(t *testing.T) {
	tb := mustTable(t, `{"routes":[
	  {"name":"exact","match":{"metadata":[{"key":"method","exact":"Greet"},{"key":"interface","prefix":"org.breeze."}]},"route":{"cluster":"a"}},
	  {"name":"regex","match":{"metadata":[{"key":"method","regex":"Get.*|List"}]},"route":{"cluster":"b"}},
	  {"name":"present","match":{"metadata":[{"key":"tenant","present":true}]},"route":{"cluster":"c"}},
	  {"name":"absent-inverted","match":{"metadata":[{"key":"method","exact":"Whoami","invert":true},{"key":"debug","present":false}]},"route":{"cluster":"d"}},
	  {"name":"catchall","route":{"cluster":"e"}}]}`)
	md := func(kv ...string) codecs.Metadata {
		var m codecs.Metadata
		for i := 0; i < len(kv); i += 2 {
			m.Set(kv[i], kv[i+1])
		}
		return m
	}
	cases := []struct {
		md   codecs.Metadata
		want string
	}{
		{md("method", "Greet", "interface", "org.breeze.Greeter"), "exact"},
		{md("method", "Greet", "interface", "com.other.Greeter", "debug", "1"), "catchall"},
		{md("method", "GetUser"), "regex"},
		{md("method", "xGetUser", "debug", "1"), "catchall"}, // regex is anchored
		{md("method", "List"), "regex"},
		{md("method", "Whoami", "tenant", "gold"), "present"},
		{md("method", "Other"), "absent-inverted"},
		{md("method", "Whoami"), "catchall"},
		{md("method", "Other", "debug", "1"), "catchall"},
	}
	for _, c := range cases {
		r := tb.Match(c.md)
		if r == nil || r.Name != c.want {
			t.Errorf("Match(%v) = %v, want %s", c.md, r, c.want)
		}
	}
}

func TestNoMatch(t *testing.T) {
	tb := mustTable(t, `{"routes":[{"match":{"metadata":[{"key":"method","exact":"A"}]},"route":{"cluster":"a"}}]}`)
	if r := tb.Match(codecs.Metadata{{Key: "method", Value: "B"}}); r != nil {
		t.Fatalf("got %s, want no route", r.Name)
	}
	var nilTable *Table
	if nilTable.Match(nil) != nil {
		t.Fatal("nil table matched")
	}
}

func TestWeightedPick(t *testing.T) {
	tb := mustTable(t, `{"routes":[{"route":{"weightedClusters":{"clusters":[
	  {"name":"a","weight":20,"subset":{"version":"v1"}},{"name":"b","weight":80},{"name":"zero","weight":0}]}}}]}`)
	r := tb.Routes[0]
	if len(r.Targets) != 2 {
		t.Fatalf("zero-weight target kept: %+v", r.Targets)
	}
	if r.Targets[0].Subset != "version=v1" {
		t.Fatalf("subset key = %q", r.Targets[0].Subset)
	}
	const n = 100000
	counts := map[string]int{}
	for range n {
		counts[r.PickTarget().Cluster]++
	}
	// 6 standard deviations of a binomial: fails by chance about once in 10^9 runs.
	sigma := math.Sqrt(n * 0.2 * 0.8)
	if d := math.Abs(float64(counts["a"]) - n*0.2); d > 6*sigma {
		t.Fatalf("a got %d of %d, want about 20%%", counts["a"], n)
	}
}

// Mirror percentages become millionths (Envoy's FractionalPercent, as
// Aeraki writes them); unset is every request; Sample draws each share
// within 6σ of its binomial mean.
func TestMirrors(t *testing.T) {
	tb := mustTable(t, `{"routes":[{"route":{"cluster":"a","requestMirrorPolicies":[
	  {"cluster":"shadow","subset":{"version":"v2"},"percentage":12.5},
	  {"cluster":"all"},
	  {"cluster":"none","percentage":0},
	  {"cluster":"tiny","percentage":0.0001}]}}]}`)
	ms := tb.Routes[0].Mirrors
	got := []string{}
	for _, m := range ms {
		got = append(got, m.Cluster+"/"+m.Subset+"/"+strconv.Itoa(int(m.PerMillion)))
	}
	want := []string{"shadow/version=v2/125000", "all//1000000", "none//0", "tiny//1"}
	if !slices.Equal(got, want) {
		t.Fatalf("mirrors %v, want %v", got, want)
	}
	const n = 100000
	counts := make([]int, len(ms))
	for range n {
		for i := range ms {
			if ms[i].Sample() {
				counts[i]++
			}
		}
	}
	t.Logf("of %d requests sampled: %v", n, counts)
	sigma := math.Sqrt(n * 0.125 * 0.875)
	if d := math.Abs(float64(counts[0]) - n*0.125); d > 6*sigma {
		t.Fatalf("12.5%% mirror sampled %d of %d", counts[0], n)
	}
	if counts[1] != n || counts[2] != 0 {
		t.Fatalf("100%% mirror sampled %d, 0%% sampled %d, of %d", counts[1], counts[2], n)
	}
}

func TestSubsetKeyCanonical(t *testing.T) {
	a := SubsetKey(map[string]string{"version": "v1", "zone": "a"})
	b := SubsetKey(map[string]string{"zone": "a", "version": "v1"})
	if a != b || a != "version=v1,zone=a" {
		t.Fatalf("%q vs %q", a, b)
	}
}

func TestCompileErrors(t *testing.T) {
	for _, js := range []string{
		`{"routes":[{"match":{"metadata":[{"key":"m","regex":"("}]},"route":{"cluster":"a"}}]}`,
		`{"routes":[{"match":{"metadata":[{"key":"m"}]},"route":{"cluster":"a"}}]}`,
		`{"routes":[{"route":{}}]}`,
		`{"routes":[{"route":{"weightedClusters":{"clusters":[{"name":"a","weight":0}]}}}]}`,
		`{"routes":[{"route":{"cluster":"a","requestMirrorPolicies":[{"percentage":5}]}}]}`,
		`{"routes":[{"route":{"cluster":"a","requestMirrorPolicies":[{"cluster":"b","percentage":100.01}]}}]}`,
		`{"routes":[{"route":{"cluster":"a","requestMirrorPolicies":[{"cluster":"b","percentage":-1}]}}]}`,
		`{"routes":[{"route":{"cluster":"a","requestMirrorPolicies":[{"cluster":"b","percentage":"NaN"}]}}]}`,
	} {
		rc := &breezev1.RouteConfiguration{}
		if err := protojson.Unmarshal([]byte(js), rc); err != nil {
			t.Fatal(err)
		}
		if _, err := Compile(rc); err == nil {
			t.Errorf("Compile(%s) succeeded", js)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	tb := &Table{}
	rc := &breezev1.RouteConfiguration{}
	for i := range 10 {
		rc.Routes = append(rc.Routes, &breezev1.Route{
			Match: &breezev1.RouteMatch{Metadata: []*breezev1.MetadataMatcher{
				{Key: "interface", Match: &breezev1.MetadataMatcher_Exact{Exact: "org.breeze.Greeter"}},
				{Key: "method", Match: &breezev1.MetadataMatcher_Exact{Exact: "M" + string(rune('a'+i))}},
			}},
			Route: &breezev1.RouteAction{ClusterSpecifier: &breezev1.RouteAction_Cluster{Cluster: "c"}},
		})
	}
	tb, _ = Compile(rc)
	md := codecs.Metadata{{Key: "dubbo", Value: "2.0.2"}, {Key: "interface", Value: "org.breeze.Greeter"}, {Key: "method", Value: "Mj"}}
	b.ReportAllocs()
	for b.Loop() {
		if tb.Match(md) == nil {
			b.Fatal("no match")
		}
	}
}
