package require

import (
	"testing"
	"time"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/filter"
	requirev1 "github.com/breeze-mesh/breeze/protos/breeze/filters/require/v1"
)

// route is a matched route with this filter's per-route config.
type route struct{ cfg any }

func (r route) RouteName() string            { return "r" }
func (r route) FilterConfig(name string) any { return map[string]any{Name: r.cfg}[name] }

// replies records what the filter answered: a filter.Conn is all a
// Stream needs to run a filter outside the proxy.
type replies struct{ kinds []codecs.ErrorKind }

func (r *replies) LocalReply(_ *filter.Stream, k codecs.ErrorKind, _ string, _ bool) {
	r.kinds = append(r.kinds, k)
}
func (r *replies) Write([]byte)                                 {}
func (r *replies) Resume(*filter.Stream)                        {}
func (r *replies) Done(*filter.Stream)                          {}
func (r *replies) Panicked(*filter.Stream, string, any, []byte) {}

// run walks a request with the given metadata through [require, a
// terminal that answers "passed"], as the proxy would.
func run(t *testing.T, global, perRoute []string, md ...string) (passed bool, s *filter.Stream) {
	t.Helper()
	factory, _ := filter.Lookup(Name)
	cfg := &requirev1.Require{Keys: global}
	if err := factory.Validate(cfg); err != nil {
		t.Fatal(err)
	}
	f, err := factory.Build(cfg, filter.BuildContext{})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := factory.ParseRoute(&requirev1.Require{Keys: perRoute})
	if err != nil {
		t.Fatal(err)
	}
	term := &terminal{}
	chain := &filter.Chain{Filters: []filter.Filter{f, term}, Names: []string{Name, filter.RouterName}}
	msg := &codecs.Message{Type: codecs.Request, ID: 1}
	for i := 0; i+1 < len(md); i += 2 {
		msg.Metadata = append(msg.Metadata, codecs.KV{Key: md[i], Value: md[i+1]})
	}
	s = &filter.Stream{}
	s.Init(chain, &replies{}, msg, time.Now())
	s.Route = route{cfg: rc}
	s.Run()
	return term.passed, s
}

type terminal struct {
	filter.Base
	passed bool
}

func (t *terminal) OnRequest(s *filter.Stream) filter.Status {
	t.passed = true
	s.Finish(filter.Outcome{Sent: true})
	return filter.Stop
}

func TestRequire(t *testing.T) {
	for _, tc := range []struct {
		name             string
		global, perRoute []string
		md               []string
		pass             bool
	}{
		{"nothing required", nil, nil, nil, true},
		{"present", []string{"tenant"}, nil, []string{"tenant", "gold"}, true},
		{"empty value counts as present", []string{"tenant"}, nil, []string{"tenant", ""}, true},
		{"missing", []string{"tenant"}, nil, []string{"user", "u1"}, false},
		{"route adds a key", []string{"tenant"}, []string{"caller"}, []string{"tenant", "gold"}, false},
		{"route key present", []string{"tenant"}, []string{"caller"}, []string{"tenant", "gold", "caller", "web"}, true},
	} {
		passed, s := run(t, tc.global, tc.perRoute, tc.md...)
		if passed != tc.pass {
			t.Errorf("%s: passed %v, want %v", tc.name, passed, tc.pass)
		}
		if !tc.pass && s.Outcome.LocalReply != codecs.ErrBadRequest {
			t.Errorf("%s: outcome %+v, want a bad_request reply", tc.name, s.Outcome)
		}
	}
}

func TestValidate(t *testing.T) {
	factory, _ := filter.Lookup(Name)
	err := factory.Validate(&requirev1.Require{Keys: []string{"a", ""}})
	if err == nil || err.Error() != `keys[1]: "": must not be empty` {
		t.Fatalf("got %v", err)
	}
}
