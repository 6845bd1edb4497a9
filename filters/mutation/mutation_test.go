package mutation

import (
	"testing"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/filter"
	mutationv1 "github.com/breeze-mesh/breeze/protos/breeze/filters/mutation/v1"
)

type route struct {
	legacy codecs.Metadata
	cfg    any
}

func (r route) RouteName() string                 { return "r" }
func (r route) FilterConfig(name string) any      { return map[string]any{Name: r.cfg}[name] }
func (r route) RequestMutations() codecs.Metadata { return r.legacy }

func kvs(pairs ...string) []*mutationv1.KeyValue {
	var out []*mutationv1.KeyValue
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, &mutationv1.KeyValue{Key: pairs[i], Value: pairs[i+1]})
	}
	return out
}

func build(t *testing.T, m *mutationv1.Mutations) filter.Filter {
	t.Helper()
	f, _ := filter.Lookup(Name)
	if err := f.Validate(m); err != nil {
		t.Fatal(err)
	}
	inst, err := f.Build(m, filter.BuildContext{})
	if err != nil {
		t.Fatal(err)
	}
	return inst
}

func TestRequestAndResponseMutations(t *testing.T) {
	f := build(t, &mutationv1.Mutations{Request: kvs("env", "prod", "tenant", "global"), Response: kvs("served-by", "breeze")})
	per, _ := filter.Lookup(Name)
	rc, err := per.ParseRoute(&mutationv1.Mutations{Request: kvs("tenant", "route"), Response: kvs("route", "r1")})
	if err != nil {
		t.Fatal(err)
	}
	s := &filter.Stream{Route: route{legacy: codecs.Metadata{{Key: "legacy", Value: "yes"}}, cfg: rc}}
	s.Request.Type = codecs.Request
	if st := f.OnRequest(s); st != filter.Continue {
		t.Fatalf("status %v", st)
	}
	want := codecs.Metadata{{Key: "env", Value: "prod"}, {Key: "tenant", Value: "route"}, {Key: "legacy", Value: "yes"}}
	if len(s.Request.Mutations) != len(want) {
		t.Fatalf("request mutations %v, want %v", s.Request.Mutations, want)
	}
	for i := range want {
		if s.Request.Mutations[i] != want[i] {
			t.Fatalf("request mutations %v, want %v", s.Request.Mutations, want)
		}
	}
	s.Response = &codecs.Message{Type: codecs.Response}
	f.OnResponse(s)
	if v, _ := s.Response.Mutations.Get("served-by"); v != "breeze" {
		t.Fatalf("response mutations %v", s.Response.Mutations)
	}
	if v, _ := s.Response.Mutations.Get("route"); v != "r1" {
		t.Fatalf("response mutations %v", s.Response.Mutations)
	}
}

func TestNoRouteNoConfig(t *testing.T) {
	f := build(t, &mutationv1.Mutations{})
	s := &filter.Stream{}
	f.OnRequest(s)
	s.Response = &codecs.Message{Type: codecs.Response}
	f.OnResponse(s)
	if len(s.Request.Mutations) != 0 || len(s.Response.Mutations) != 0 {
		t.Fatal("mutations out of nothing")
	}
}
