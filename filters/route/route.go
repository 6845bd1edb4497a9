// Package route compiles a RouteConfiguration into an immutable table and
// matches decoded request metadata against it.
//
// A Table is built once per configuration (or xDS update) and never
// mutated, so connections can share it and a new one can be swapped in
// atomically under load.
package route

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/config"
	"github.com/breeze-mesh/breeze/filters/cluster"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/retry"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// Table is an ordered list of routes; the first match wins.
type Table struct {
	Name   string
	Routes []*Route
}

// Route is one compiled route.
type Route struct {
	Name       string
	conditions Matcher
	// Targets are the clusters (and subsets) the route sends to; one
	// target, or several for a weighted split.
	Targets     []Target
	totalWeight uint32
	Mutations   codecs.Metadata
	// Timeout is the per-request timeout; 0 means the proxy's default.
	Timeout time.Duration
	// HashKey is the metadata key for consistent hashing, "" for the cluster's own.
	HashKey string
	// Retry is the route's retry policy, nil for the proxy's default.
	Retry *retry.Policy
	// Mirrors are the route's request_mirror_policies: where shadow
	// copies of a share of its requests go.
	Mirrors []Mirror
	// filterConfigs are the per-route configs of L7 filters, parsed by
	// each filter's factory once per table.
	filterConfigs map[string]any
}

// RouteName and FilterConfig make a Route the filter.RouteEntry filters see.
func (r *Route) RouteName() string { return r.Name }

// RequestMutations are the route's request_mutation (applied by the
// mutation filter).
func (r *Route) RequestMutations() codecs.Metadata { return r.Mutations }

// FilterConfig returns the named filter's per-route config, or nil.
func (r *Route) FilterConfig(name string) any { return r.filterConfigs[name] }

// Target is one weighted destination of a route.
type Target struct {
	Cluster string
	// Subset is the canonical form of the subset labels ("k=v,k2=v2",
	// sorted), "" for the whole cluster. Clusters index their subsets by it.
	Subset       string
	SubsetLabels map[string]string
	Weight       uint32
}

// Mirror is one request mirror policy of a route.
type Mirror struct {
	Cluster string
	// Subset and SubsetLabels select the mirror's endpoints, as Target's.
	Subset       string
	SubsetLabels map[string]string
	// PerMillion is the share of requests mirrored, in millionths: the
	// resolution of Envoy's FractionalPercent (MILLION), in which Aeraki
	// writes mirrorPercentage.
	PerMillion uint32
}

// Sample draws whether this request is mirrored.
func (m *Mirror) Sample() bool {
	switch m.PerMillion {
	case 0:
		return false
	case million:
		return true
	}
	return rand.Uint32N(million) < m.PerMillion
}

const million = 1_000_000

type matchKind uint8

const (
	matchExact matchKind = iota
	matchPrefix
	matchRegex
	matchPresent
)

type condition struct {
	key     string
	kind    matchKind
	value   string
	re      *regexp.Regexp
	present bool
	invert  bool
}

func (c *condition) holds(md codecs.Metadata) bool {
	v, ok := md.Get(c.key)
	var r bool
	switch c.kind {
	case matchPresent:
		r = ok == c.present
	case matchExact:
		r = ok && v == c.value
	case matchPrefix:
		r = ok && strings.HasPrefix(v, c.value)
	case matchRegex:
		r = ok && c.re.MatchString(v)
	}
	return r != c.invert
}

// Match returns the first route whose conditions all hold, or nil.
func (t *Table) Match(md codecs.Metadata) *Route {
	if t == nil {
		return nil
	}
	for _, r := range t.Routes {
		if r.conditions.Matches(md) {
			return r
		}
	}
	return nil
}

// PickTarget chooses one target, by weight when there are several.
func (r *Route) PickTarget() *Target {
	if len(r.Targets) == 1 {
		return &r.Targets[0]
	}
	n := rand.Uint32N(r.totalWeight)
	for i := range r.Targets {
		if n < r.Targets[i].Weight {
			return &r.Targets[i]
		}
		n -= r.Targets[i].Weight
	}
	return &r.Targets[len(r.Targets)-1]
}

// SubsetKey is the canonical name of a set of subset labels.
func SubsetKey(labels map[string]string) string { return cluster.SubsetKey(labels) }

// Compile builds a Table. It re-checks what it relies on so that a table is
// never half-built, but full validation with field paths is config.Validate's job.
func Compile(rc *breezev1.RouteConfiguration) (*Table, error) {
	t := &Table{Name: rc.GetName()}
	for i, pr := range rc.GetRoutes() {
		r, err := compileRoute(pr)
		if err != nil {
			return nil, fmt.Errorf("routes[%d] (%q): %w", i, pr.GetName(), err)
		}
		t.Routes = append(t.Routes, r)
	}
	return t, nil
}

func compileRoute(pr *breezev1.Route) (*Route, error) {
	r := &Route{
		Name:    pr.GetName(),
		Timeout: pr.GetTimeout().AsDuration(),
		HashKey: pr.GetRoute().GetHashKey(),
	}
	rp, err := retry.Compile(pr.GetRetryPolicy())
	if err != nil {
		return nil, fmt.Errorf("retry_policy: %w", err)
	}
	r.Retry = rp
	if r.conditions, err = CompileMatcher(pr.GetMatch().GetMetadata()); err != nil {
		return nil, fmt.Errorf("match.metadata%w", err)
	}
	action := pr.GetRoute()
	switch {
	case action.GetCluster() != "":
		r.Targets = []Target{{
			Cluster: action.GetCluster(), Subset: SubsetKey(action.GetSubset()),
			SubsetLabels: action.GetSubset(), Weight: 1,
		}}
	case len(action.GetWeightedClusters().GetClusters()) > 0:
		for _, w := range action.GetWeightedClusters().GetClusters() {
			if w.GetWeight() == 0 {
				continue
			}
			r.Targets = append(r.Targets, Target{
				Cluster: w.GetName(), Subset: SubsetKey(w.GetSubset()),
				SubsetLabels: w.GetSubset(), Weight: w.GetWeight(),
			})
		}
	}
	if len(r.Targets) == 0 {
		return nil, fmt.Errorf("route: no cluster, or weighted clusters with no weight")
	}
	for _, t := range r.Targets {
		r.totalWeight += t.Weight
	}
	for i, mp := range action.GetRequestMirrorPolicies() {
		if mp.GetCluster() == "" {
			return nil, fmt.Errorf("route.request_mirror_policies[%d]: no cluster", i)
		}
		m := Mirror{Cluster: mp.GetCluster(), Subset: SubsetKey(mp.GetSubset()), SubsetLabels: mp.GetSubset(), PerMillion: million}
		if mp.Percentage != nil {
			pct := mp.GetPercentage()
			if !(pct >= 0 && pct <= 100) { // NaN too
				return nil, fmt.Errorf("route.request_mirror_policies[%d].percentage: %v is not 0–100", i, pct)
			}
			m.PerMillion = uint32(math.Round(pct * (million / 100)))
		}
		r.Mirrors = append(r.Mirrors, m)
	}
	for _, kv := range pr.GetRequestMutation() {
		r.Mutations = append(r.Mutations, codecs.KV{Key: kv.GetKey(), Value: kv.GetValue()})
	}
	for _, name := range slices.Sorted(maps.Keys(pr.GetTypedPerFilterConfig())) {
		f, ok := filter.Lookup(name)
		if !ok {
			return nil, fmt.Errorf("typed_per_filter_config[%q]: %w", name, filter.UnknownError(name))
		}
		msg, err := config.FilterRouteConfig(f, pr.GetTypedPerFilterConfig()[name])
		if err != nil {
			return nil, fmt.Errorf("typed_per_filter_config[%q]: %w", name, err)
		}
		var parsed any = msg
		if f.ParseRoute != nil {
			if parsed, err = f.ParseRoute(msg); err != nil {
				return nil, fmt.Errorf("typed_per_filter_config[%q]: %w", name, err)
			}
		}
		if r.filterConfigs == nil {
			r.filterConfigs = map[string]any{}
		}
		r.filterConfigs[name] = parsed
	}
	return r, nil
}
