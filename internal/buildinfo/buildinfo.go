// Package buildinfo says which Breeze a binary is and which Envoy Go API
// and Istio release it was built for: `breeze version` prints it, and the
// Envoy plugin logs it once when Envoy loads it.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/breeze-mesh/breeze/internal/release"
)

// Stamped at build time by the Makefile and the Dockerfile:
//
//	-ldflags "-X github.com/breeze-mesh/breeze/internal/buildinfo.version=v0.4.0
//	          -X github.com/breeze-mesh/breeze/internal/buildinfo.commit=<hash>[-dirty]"
//
// Go's own VCS stamping (vcs.revision, vcs.modified) is only the fallback:
// go build records nothing in a git worktree (whose .git is a file;
// golang/go#58218), with -buildvcs=false, or without a .git at all, as in
// a Docker build.
var version, commit string

// EnvoyModule is the module of Envoy's Go API. A plugin works only in the
// Envoy whose Go API it was built against, so its version is part of
// Breeze's: read from the module information Go embeds.
const EnvoyModule = release.EnvoyModule

// Info identifies a build.
type Info struct {
	// Version is a release (v0.4.0) when stamped, else the main module's
	// version Go recorded, else "devel".
	Version string
	// Commit is the full commit hash, "-dirty" when built with
	// uncommitted changes; "unknown" when nothing recorded it.
	Commit string
	// EnvoyAPI is the version of Envoy's Go API linked in (v1.36.2), and
	// Istio the Istio release whose proxies run that Envoy (1.28).
	EnvoyAPI string
	Istio    string
	// Go is the Go release that built the binary.
	Go string
}

// Get is this binary's Info.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return get(bi, version, commit)
}

func get(bi *debug.BuildInfo, version, commit string) Info {
	i := Info{Version: version, Commit: commit, EnvoyAPI: "unknown", Istio: "unknown", Go: runtime.Version()}
	if bi != nil {
		if i.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version
		}
		if i.Commit == "" {
			var rev, modified string
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					rev = s.Value
				case "vcs.modified":
					modified = s.Value
				}
			}
			if rev != "" && modified == "true" {
				rev += "-dirty"
			}
			i.Commit = rev
		}
		for _, d := range bi.Deps {
			if d.Path == EnvoyModule {
				if d.Replace != nil {
					d = d.Replace
				}
				i.EnvoyAPI = d.Version
				i.Istio = IstioFor(d.Version)
			}
		}
	}
	if i.Version == "" {
		i.Version = "devel"
	}
	if i.Commit == "" {
		i.Commit = "unknown"
	}
	return i
}

// IstioFor is the Istio release whose proxies run the Envoy of an Envoy Go
// API version (v1.36.2 → 1.28), "unknown" if Breeze has no build target
// for it (internal/release).
func IstioFor(envoyVersion string) string {
	if r, ok := release.ForEnvoy(envoyVersion); ok {
		return r.Istio
	}
	return "unknown"
}

// String is the line `breeze version` prints:
//
//	breeze v0.4.0 (commit 3c1a0da0…) for Envoy Go API v1.36.2 (Istio 1.28), go1.26.8
func (i Info) String() string {
	return fmt.Sprintf("breeze %s (commit %s) for Envoy Go API %s (Istio %s), %s", i.Version, i.Commit, i.EnvoyAPI, i.Istio, i.Go)
}

// LogAttrs are the same facts as slog key-value pairs, for a log line.
func (i Info) LogAttrs() []any {
	return []any{"version", i.Version, "commit", i.Commit, "envoy_go_api", i.EnvoyAPI, "istio", i.Istio, "go", i.Go}
}
