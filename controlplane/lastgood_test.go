package controlplane

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

// stepSource reads a directory each time the test asks, so that a test
// follows Run update by update, without the watch and its timing.
type stepSource struct {
	d    *DirSource
	read chan struct{}
}

func (s *stepSource) Run(ctx context.Context, update func(Snapshot)) error {
	for {
		update(s.d.Read())
		select {
		case <-ctx.Done():
			return nil
		case <-s.read:
		}
	}
}

type served struct {
	res      Resources
	problems []string
}

// runSteps runs Run over dir d; the function it returns rereads the
// directory and returns what is then served (the first call: the first
// read).
func runSteps(t *testing.T, d string) func() served {
	t.Helper()
	return runStepsLogging(t, d, quiet)
}

// runStepsLogging is runSteps with Run logging to log.
func runStepsLogging(t *testing.T, d string, log *slog.Logger) func() served {
	t.Helper()
	src := &stepSource{d: &DirSource{Dir: d, Log: quiet}, read: make(chan struct{})}
	updates := make(chan served, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, src, NewServer(quiet), log, func(r Resources, ps []Problem) {
			var msgs []string
			for _, p := range ps {
				msgs = append(msgs, strings.ReplaceAll(p.Error(), d+"/", ""))
			}
			updates <- served{r, msgs}
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	first := true
	return func() served {
		t.Helper()
		if !first {
			src.read <- struct{}{}
		}
		first = false
		return <-updates
	}
}

func hasProblem(s served, want string) bool {
	for _, p := range s.problems {
		if strings.Contains(p, want) {
			return true
		}
	}
	return false
}

// A file that replaces a good object by a broken one under another name
// keeps the host's last good rules, as a broken update of the same object
// does, and reports the error; deleting the broken object then returns the
// host to its defaults.
func TestBrokenObjectUnderANewNameKeepsTheHostsLastGoodRules(t *testing.T) {
	const rname, cname = "org.example.Greeter_20880", "outbound|20880||org.example.Greeter"
	rename := func(y, from, to string) string { return strings.Replace(y, "name: "+from+",", "name: "+to+",", 1) }
	cases := []struct {
		name, file, good, broken, want string
		// kept: what must stay as it was.
		kept func(a, b Resources) bool
	}{
		{name: "MetaRouter", file: "router.yaml", good: metaRouter,
			broken: strings.Replace(rename(metaRouter, "greeter", "greeter-v2"), "requestMutation", "requestMutations", 1),
			want:   `router.yaml: MetaRouter demo/greeter-v2: spec.routes[0].requestMutations: unknown field`,
			kept:   func(a, b Resources) bool { return proto.Equal(a.Routes[rname], b.Routes[rname]) }},
		{name: "DestinationRule", file: "dr.yaml", good: destinationRule,
			broken: strings.Replace(rename(destinationRule, "greeter", "greeter-v2"), "simple: ROUND_ROBIN", "simple: ROUND_ROBINN", 1),
			want:   `dr.yaml: DestinationRule demo/greeter-v2: spec.trafficPolicy.loadBalancer.simple: "ROUND_ROBINN": simple must be one of LEAST_CONN, RANDOM, PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST; did you mean ROUND_ROBIN?`,
			kept: func(a, b Resources) bool {
				return proto.Equal(a.Clusters[cname], b.Clusters[cname]) && proto.Equal(a.Routes[rname], b.Routes[rname])
			}},
		{name: "ServiceEntry", file: "se.yaml", good: serviceEntry,
			broken: strings.Replace(rename(serviceEntry, "greeter", "greeter-v2"), "weight: 2", "weight: heavy", 1),
			want:   `se.yaml: ServiceEntry demo/greeter-v2: spec.endpoints[0].weight: invalid value`,
			kept: func(a, b Resources) bool {
				return proto.Equal(a.Endpoints[cname], b.Endpoints[cname]) && proto.Equal(a.Clusters[cname], b.Clusters[cname]) &&
					proto.Equal(a.Routes[rname], b.Routes[rname])
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{"se.yaml": serviceEntry, "dr.yaml": destinationRule, "router.yaml": metaRouter}
			d := dir(t, files)
			next := runSteps(t, d)
			good := next()
			if len(good.problems) != 0 {
				t.Fatalf("problems: %q", good.problems)
			}

			write(t, d, tc.file, tc.broken)
			s := next()
			if !hasProblem(s, tc.want) {
				t.Fatalf("problems:\n%s\nwant one containing %s", strings.Join(s.problems, "\n"), tc.want)
			}
			if !tc.kept(good.res, s.res) {
				t.Fatalf("the host's resources changed:\nbefore %v\nafter  %v", good.res, s.res)
			}
			if keep := "demo/greeter-v2: keeping the last good rules of org.example.Greeter from " + tc.file; !hasProblem(s, keep) {
				t.Fatalf("problems:\n%s\nwant one containing %s", strings.Join(s.problems, "\n"), keep)
			}
			// Still so on the next read of the directory.
			if s = next(); !tc.kept(good.res, s.res) {
				t.Fatalf("the host's resources changed on the next read:\nbefore %v\nafter  %v", good.res, s.res)
			}
		})
	}

	// Deleting the broken object: the host has no MetaRouter any more.
	d := dir(t, map[string]string{"se.yaml": serviceEntry, "dr.yaml": destinationRule, "router.yaml": metaRouter})
	next := runSteps(t, d)
	next()
	write(t, d, "router.yaml", strings.Replace(rename(metaRouter, "greeter", "greeter-v2"), "requestMutation", "requestMutations", 1))
	if s := next(); s.res.Routes[rname].GetRoutes()[0].GetName() != "gold" {
		t.Fatalf("broken: %v", s.res.Routes[rname])
	}
	write(t, d, "router.yaml", "# nothing\n")
	if s := next(); s.res.Routes[rname].GetRoutes()[0].GetName() != "default" {
		t.Fatalf("deleted: %v", s.res.Routes[rname])
	}
	// A broken MetaRouter for the host again finds nothing to keep.
	write(t, d, "router.yaml", strings.Replace(rename(metaRouter, "greeter", "greeter-v3"), "requestMutation", "requestMutations", 1))
	if s := next(); s.res.Routes[rname].GetRoutes()[0].GetName() != "default" {
		t.Fatalf("broken after delete: %v", s.res.Routes[rname])
	}
}

// Only the hosts the broken object names, and no other object holds, keep
// the last good object's rules.
func TestBrokenObjectKeepsOnlyItsHosts(t *testing.T) {
	d := dir(t, map[string]string{"other.yaml": otherService})
	next := runSteps(t, d)
	good := next()
	// The broken entry names only Other: Alias is gone.
	write(t, d, "other.yaml", strings.NewReplacer("name: other", "name: other-v2", "org.example.Alias", "org.example.Third", "number: 20990", "number: x").Replace(otherService))
	s := next()
	for _, name := range []string{"org.example.Other_20880", "org.example.Other_20990"} {
		if !proto.Equal(s.res.Routes[name], good.res.Routes[name]) {
			t.Fatalf("%s: %v", name, s.res.Routes[name])
		}
	}
	if s.res.Routes["org.example.Alias_20880"] != nil || s.res.Routes["org.example.Third_20880"] != nil {
		t.Fatalf("routes %v", s.res.Routes)
	}
	if !hasProblem(s, "ServiceEntry default/other-v2: keeping the last good rules of org.example.Other from ") {
		t.Fatalf("problems: %q", s.problems)
	}
	// Another object now holds the host: it is used.
	write(t, d, "new.yaml", strings.Replace(entry("org.example.Other", 20880), "10.0.0.1", "10.0.0.9", 1))
	s = next()
	if ep := s.res.Endpoints["outbound|20880||org.example.Other"].GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetAddress(); ep != "10.0.0.9" {
		t.Fatalf("endpoint %s, want the new entry's", ep)
	}
	if s.res.Routes["org.example.Other_20990"] != nil || hasProblem(s, "keeping the last good rules") {
		t.Fatalf("the last good entry is still used: %v %q", s.res.Routes, s.problems)
	}
}
