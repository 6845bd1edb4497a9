// Package release lists the Istio releases Breeze is built for. A Go
// plugin works only in the Envoy whose Go API it was built against, so
// each release is a build target of its own: one go.mod (modfile) pinning
// that Envoy's Go API and the go-control-plane and istio.io/api versions
// its configs are checked with, and the images that load its breeze.so.
//
// The Makefile, the Dockerfile and the README's version table say the same;
// release_test.go checks that they agree with All.
package release

import (
	"fmt"
	"reflect"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
)

// A Release is one build target.
type Release struct {
	// Istio is the Istio minor release whose sidecars load this build:
	// "1.28".
	Istio string
	// Envoy is the Envoy minor release those sidecars run (istio/proxy's
	// ENVOY_VERSION.txt): "1.36".
	Envoy string
	// EnvoyGoAPI is the version of github.com/envoyproxy/envoy (its
	// contrib/golang Go API) the build links: "v1.36.2".
	EnvoyGoAPI string
	// Modfile is the go.mod of the build, relative to the module root:
	// "go.mod" for the default target, envoy-<Envoy>.mod for the others
	// (go build -modfile=...).
	Modfile string
	// EnvoyImage is the contrib image of that Envoy (plain Envoy, docker
	// compose), and IstioProxyImage the Istio sidecar image of the release.
	EnvoyImage      string
	IstioProxyImage string
	// MaxGlibc is the oldest glibc of those images: breeze.so may need no
	// newer one, or Envoy's dlopen fails ("GLIBC_x not found").
	MaxGlibc string
}

// All are the build targets, oldest first. The first is the default
// (go.mod). Adding one: docs/adding-a-release.md.
var All = []Release{
	{
		Istio: "1.28", Envoy: "1.36", EnvoyGoAPI: "v1.36.2", Modfile: "go.mod",
		EnvoyImage: "envoyproxy/envoy:contrib-v1.36.2", IstioProxyImage: "istio/proxyv2:1.28.3",
		MaxGlibc: "2.35", // contrib image: Ubuntu 22.04 (2.35); proxyv2: Ubuntu 24.04 (2.39)
	},
	{
		Istio: "1.31", Envoy: "1.39", EnvoyGoAPI: "v1.39.0", Modfile: "envoy-1.39.mod",
		EnvoyImage: "envoyproxy/envoy:contrib-v1.39.0", IstioProxyImage: "istio/proxyv2:1.31.4",
		MaxGlibc: "2.35", // the same bases as 1.28's
	},
}

// Default is the target go.mod builds.
func Default() Release { return All[0] }

// ProxyVersion is the regular expression that pins an EnvoyFilter patch to
// the release's sidecars (match.proxy.proxyVersion): `^1\.28\.`.
func (r Release) ProxyVersion() string {
	return "^" + regexp.QuoteMeta(r.Istio) + `\.`
}

// ProxyVersionMatches says whether an EnvoyFilter's proxyVersion regular
// expression selects this release's sidecars (istiod matches it against
// the proxy's ISTIO_VERSION, e.g. 1.28.3). An invalid expression matches
// nothing.
func (r Release) ProxyVersionMatches(proxyVersion string) bool {
	re, err := regexp.Compile(proxyVersion)
	if err != nil {
		return false
	}
	return re.MatchString(r.Istio + ".0")
}

// String names the release as the docs do: "Istio 1.28 (Envoy 1.36)".
func (r Release) String() string {
	return fmt.Sprintf("Istio %s (Envoy %s)", r.Istio, r.Envoy)
}

// ForIstio is the target for an Istio release, "1.31" or "1.31.4".
func ForIstio(v string) (Release, error) {
	minor := minorOf(strings.TrimPrefix(v, "v"))
	for _, r := range All {
		if r.Istio == minor {
			return r, nil
		}
	}
	return Release{}, fmt.Errorf("no Breeze build for Istio %q: Breeze is built for %s", v, Names())
}

// ForEnvoy is the target for an Envoy version, "v1.39.0" or "1.39".
func ForEnvoy(v string) (Release, bool) {
	minor := minorOf(strings.TrimPrefix(v, "v"))
	for _, r := range All {
		if r.Envoy == minor {
			return r, true
		}
	}
	return Release{}, false
}

// Names lists the targets: "Istio 1.28 (Envoy 1.36), Istio 1.31 (Envoy 1.39)".
func Names() string {
	s := make([]string, len(All))
	for i, r := range All {
		s[i] = r.String()
	}
	return strings.Join(s, ", ")
}

// EnvoyModule is the module of Envoy's Go API.
const EnvoyModule = "github.com/envoyproxy/envoy"

// EnvoyAPITypes is the module of Envoy's API types (go-control-plane),
// versioned like Envoy: each target pins the one of its Envoy.
const EnvoyAPITypes = "github.com/envoyproxy/go-control-plane/envoy"

// Built is the target this binary was built for: the one whose Envoy Go API
// (EnvoyModule) it links, or, in a binary without the Go API (one that only
// checks configs), whose Envoy API types (EnvoyAPITypes). false when it links
// neither, or a version of no target.
func Built() (Release, bool) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Release{}, false
	}
	return builtFrom(bi.Deps)
}

// ForFunc is the target whose version of module holds fn (a function or
// method value), read from the source path Go records for it:
// ".../pkg/mod/github.com/envoyproxy/envoy@v1.39.0/contrib/...", or
// "github.com/envoyproxy/envoy@v1.39.0/contrib/..." built with -trimpath.
// It works where Built cannot: a test binary of a package that is not main
// records no modules. false for a module replaced by a directory.
func ForFunc(module string, fn any) (Release, bool) {
	v := reflect.ValueOf(fn)
	if v.Kind() != reflect.Func || v.IsNil() {
		return Release{}, false
	}
	f := runtime.FuncForPC(v.Pointer())
	if f == nil {
		return Release{}, false
	}
	file, _ := f.FileLine(f.Entry())
	_, after, ok := strings.Cut(file, module+"@")
	if !ok {
		return Release{}, false
	}
	version, _, _ := strings.Cut(after, "/")
	return ForEnvoy(version)
}

func builtFrom(deps []*debug.Module) (Release, bool) {
	for _, path := range []string{EnvoyModule, EnvoyAPITypes} {
		for _, d := range deps {
			if d.Path == path {
				if d.Replace != nil {
					d = d.Replace
				}
				return ForEnvoy(d.Version)
			}
		}
	}
	return Release{}, false
}

// minorOf is "1.31" of "1.31.4", "1.31" and "1.31.0-beta.1".
func minorOf(v string) string {
	major, rest, ok := strings.Cut(v, ".")
	if !ok {
		return v
	}
	minor, _, _ := strings.Cut(rest, ".")
	return major + "." + minor
}
