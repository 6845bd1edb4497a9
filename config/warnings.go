package config

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// errConnectTimeout says why clusters[].connect_timeout is deprecated and
// what to do instead.
var errConnectTimeout = errors.New("deprecated and ignored: Envoy's plainText cluster sets the connect timeout of every upstream connection Breeze opens (breeze run: 5s); set connect_timeout on the plainText cluster instead, and remove this field")

// Warnings lists what a ProxyConfig sets that is accepted but has no
// effect, such as a deprecated field, or a hash_key where no balancer
// hashes (a hash_key does not choose the policy: lb_policy does): configs
// that set it still load, but should change. Each warning reads like one of Validate's errors, naming
// the field path and the value:
//
//	clusters[1].connect_timeout: 1s: deprecated and ignored: ...
//
// It does not validate: call Validate first. nil means nothing to report.
func Warnings(cfg *breezev1.ProxyConfig) []string {
	return warningStrings(FieldWarnings(cfg))
}

// FieldWarnings returns what Warnings reports, as FieldErrors, for callers
// that put the paths under their own (breeze validate names them by their
// place in the file).
func FieldWarnings(cfg *breezev1.ProxyConfig) []*FieldError {
	return proxyWarnings("", cfg)
}

// RunnerWarnings returns Warnings for the proxy of every listener of a
// runner config, paths prefixed "listeners[i].proxy." as ParseRunner's
// errors are.
func RunnerWarnings(r *breezev1.Runner) []string {
	var ws []*FieldError
	for i, l := range r.GetListeners() {
		ws = append(ws, proxyWarnings(fmt.Sprintf("listeners[%d].proxy.", i), l.GetProxy())...)
	}
	return warningStrings(ws)
}

func proxyWarnings(prefix string, cfg *breezev1.ProxyConfig) []*FieldError {
	var ws []*FieldError
	for i, cl := range cfg.GetClusters() {
		if d := cl.GetConnectTimeout(); d != nil {
			ws = append(ws, &FieldError{
				Path:  fmt.Sprintf("%sclusters[%d].connect_timeout", prefix, i),
				Value: d.AsDuration().String(),
				Err:   errConnectTimeout,
			})
		}
		ws = append(ws, clusterHashWarnings(fmt.Sprintf("%sclusters[%d]", prefix, i), cl)...)
	}
	ws = append(ws, routeHashWarnings(prefix+"route_config.", cfg.GetRouteConfig(), cfg.GetClusters())...)
	return ws
}

// RouteWarnings returns what Warnings reports of a route table that
// arrives over xDS for a proxy whose own clusters are clusters (paths
// relative to the resource): a hash_key no cluster it names hashes on.
func RouteWarnings(rc *breezev1.RouteConfiguration, clusters []*breezev1.Cluster) []string {
	return warningStrings(routeHashWarnings("", rc, clusters))
}

func hashes(p breezev1.Cluster_LbPolicy) bool {
	return p == breezev1.Cluster_RING_HASH || p == breezev1.Cluster_MAGLEV
}

// subsetPolicy is the policy that balances the endpoints with labels in
// cl: that of the subset with exactly these labels if it sets one (as
// package cluster picks it), else the cluster's.
func subsetPolicy(cl *breezev1.Cluster, labels map[string]string) breezev1.Cluster_LbPolicy {
	if len(labels) > 0 {
		for _, sub := range cl.GetSubsets() {
			if sub.LbPolicy != nil && maps.Equal(sub.GetLabels(), labels) {
				return sub.GetLbPolicy()
			}
		}
	}
	return cl.GetLbPolicy()
}

// clusterHashWarnings names the hash_keys of a cluster and its subsets
// that no hash policy uses: a hash_key does not choose the policy, and a
// round robin (or least request, random) balancer ignores it.
func clusterHashWarnings(path string, cl *breezev1.Cluster) []*FieldError {
	var ws []*FieldError
	if key := cl.GetHashKey(); key != "" {
		// Subsets with a hash policy and no key of their own use it.
		used := hashes(cl.GetLbPolicy()) || slices.ContainsFunc(cl.GetSubsets(), func(sub *breezev1.ClusterSubset) bool {
			return sub.LbPolicy != nil && hashes(sub.GetLbPolicy()) && sub.GetHashKey() == ""
		})
		if !used {
			ws = append(ws, &FieldError{Path: path + ".hash_key", Value: strconv.Quote(key),
				Err: fmt.Errorf("ignored: lb_policy %s does not hash (nor does any subset); set lb_policy RING_HASH or MAGLEV to balance on it", cl.GetLbPolicy())})
		}
	}
	for j, sub := range cl.GetSubsets() {
		p := cl.GetLbPolicy()
		if sub.LbPolicy != nil {
			p = sub.GetLbPolicy()
		}
		if key := sub.GetHashKey(); key != "" && !hashes(p) {
			ws = append(ws, &FieldError{Path: fmt.Sprintf("%s.subsets[%d].hash_key", path, j), Value: strconv.Quote(key),
				Err: fmt.Errorf("ignored: the subset balances with %s, which does not hash; set its lb_policy RING_HASH or MAGLEV to balance on it", p)})
		}
	}
	return ws
}

// routeHashWarnings names each route hash_key that none of the clusters
// (and subsets) its route targets hashes on. Targets that are not in
// clusters (fetched over xDS) are not judged.
func routeHashWarnings(prefix string, rc *breezev1.RouteConfiguration, clusters []*breezev1.Cluster) []*FieldError {
	byName := map[string]*breezev1.Cluster{}
	for _, cl := range clusters {
		if _, dup := byName[cl.GetName()]; !dup {
			byName[cl.GetName()] = cl
		}
	}
	var ws []*FieldError
	for i, r := range rc.GetRoutes() {
		a := r.GetRoute()
		key := a.GetHashKey()
		if key == "" {
			continue
		}
		type target struct {
			name   string
			labels map[string]string
		}
		var ts []target
		switch s := a.GetClusterSpecifier().(type) {
		case *breezev1.RouteAction_Cluster:
			ts = append(ts, target{s.Cluster, a.GetSubset()})
		case *breezev1.RouteAction_WeightedClusters:
			for _, w := range s.WeightedClusters.GetClusters() {
				ts = append(ts, target{w.GetName(), w.GetSubset()})
			}
		}
		var policies []string
		judged := true
		for _, t := range ts {
			cl := byName[t.name]
			if cl == nil {
				judged = false
				break
			}
			p := subsetPolicy(cl, t.labels)
			if hashes(p) {
				judged = false
				break
			}
			policies = append(policies, fmt.Sprintf("%q %s", t.name, p))
		}
		if judged && len(policies) > 0 {
			ws = append(ws, &FieldError{Path: fmt.Sprintf("%sroutes[%d].route.hash_key", prefix, i), Value: strconv.Quote(key),
				Err: fmt.Errorf("ignored: no cluster the route targets hashes (%s); set lb_policy RING_HASH or MAGLEV on the cluster (or its subset) to balance on it", strings.Join(slices.Compact(policies), ", "))})
		}
	}
	return ws
}

func warningStrings(ws []*FieldError) []string {
	if len(ws) == 0 {
		return nil
	}
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.Error()
	}
	return out
}
