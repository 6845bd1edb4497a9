// Package controlplane is Breeze's control plane (`breeze xds`): it reads
// the YAML people already write for Istio and Aeraki — MetaRouter,
// DestinationRule, ServiceEntry — from a Source, translates them into
// Breeze route tables, Envoy clusters and EDS resources, and serves those
// over xDS with go-control-plane's server, pushing only what changed.
//
// Translation is per object: an object with errors is reported (naming its
// file and field) and left out, and the resources it fed keep their last
// good version, while every other object keeps working.
package controlplane

import (
	"context"
	"log/slog"
)

// Run translates every snapshot of src and serves the result on srv until
// ctx ends. onUpdate, if not nil, sees what is served and the problems of
// each snapshot (tests, status pages).
func Run(ctx context.Context, src Source, srv *Server, log *slog.Logger, onUpdate func(Resources, []Problem)) error {
	if log == nil {
		log = slog.Default()
	}
	var served Resources
	// Problems logged for the previous snapshot, by version and text: an
	// unchanged object's problems are logged once, not on every read.
	var logged map[string]bool
	// What depends on one object alone is translated again only when it
	// changed (see Translator).
	var translator Translator
	return src.Run(ctx, func(snap Snapshot) {
		tr := translator.Translate(snap.Objects)
		res := tr.Resources
		// A resource whose source broke keeps its last good version.
		for name := range tr.FailedRoutes {
			if old, ok := served.Routes[name]; ok {
				res.Routes[name] = old
			}
		}
		for name := range tr.FailedClusters {
			if old, ok := served.Clusters[name]; ok {
				res.Clusters[name] = old
			}
		}
		for name := range tr.FailedEndpoints {
			if old, ok := served.Endpoints[name]; ok {
				res.Endpoints[name] = old
			}
		}
		problems := append(snap.Problems, tr.Problems...)
		seen := make(map[string]bool, len(problems))
		for _, p := range problems {
			key := p.Version + " " + p.Error()
			seen[key] = true
			if logged[key] {
				continue
			}
			if p.Warning {
				log.Warn("ignored: " + p.Error())
			} else {
				log.Error("rejected: " + p.Error())
			}
		}
		logged = seen
		if err := srv.Set(res); err != nil {
			log.Error("serving the new resources", "err", err)
			return
		}
		served = res.clone()
		log.Info("serving", "objects", len(snap.Objects), "route_configs", len(res.Routes), "clusters", len(res.Clusters),
			"endpoint_sets", len(res.Endpoints), "problems", len(problems))
		if onUpdate != nil {
			onUpdate(served, problems)
		}
	})
}
