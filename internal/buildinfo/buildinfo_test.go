package buildinfo

import (
	"os"
	"regexp"
	"runtime"
	"runtime/debug"
	"testing"
)

func TestGet(t *testing.T) {
	deps := []*debug.Module{{Path: "google.golang.org/grpc", Version: "v1.75.1"}, {Path: EnvoyModule, Version: "v1.36.2"}}
	vcs := []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "3c1a0da0c4901b9d680e714812a708d4259510ad"}, {Key: "vcs.modified", Value: "true"}}
	for _, tc := range []struct {
		name            string
		bi              *debug.BuildInfo
		version, commit string
		want            Info
	}{
		{
			name:    "stamped with -ldflags: wins over what Go recorded",
			bi:      &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20260101000000-3c1a0da0c490+dirty"}, Deps: deps, Settings: vcs},
			version: "v0.4.0", commit: "0123456789abcdef0123456789abcdef01234567",
			want: Info{Version: "v0.4.0", Commit: "0123456789abcdef0123456789abcdef01234567", EnvoyAPI: "v1.36.2", Istio: "1.28"},
		},
		{
			name: "Go's VCS stamping, with uncommitted changes",
			bi:   &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20260101000000-3c1a0da0c490+dirty"}, Deps: deps, Settings: vcs},
			want: Info{Version: "v0.0.0-20260101000000-3c1a0da0c490+dirty", Commit: "3c1a0da0c4901b9d680e714812a708d4259510ad-dirty", EnvoyAPI: "v1.36.2", Istio: "1.28"},
		},
		{
			name: "nothing recorded (a worktree, -buildvcs=false, a Docker build without build args)",
			bi:   &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Deps: deps},
			want: Info{Version: "devel", Commit: "unknown", EnvoyAPI: "v1.36.2", Istio: "1.28"},
		},
		{
			name: "Envoy's module replaced",
			bi:   &debug.BuildInfo{Deps: []*debug.Module{{Path: EnvoyModule, Version: "v1.36.2", Replace: &debug.Module{Path: EnvoyModule, Version: "v1.37.0"}}}},
			want: Info{Version: "devel", Commit: "unknown", EnvoyAPI: "v1.37.0", Istio: "unknown"},
		},
		{
			name: "no build info",
			want: Info{Version: "devel", Commit: "unknown", EnvoyAPI: "unknown", Istio: "unknown"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.want.Go = runtime.Version()
			if got := get(tc.bi, tc.version, tc.commit); got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	i := Info{Version: "v0.4.0", Commit: "3c1a0da0c4901b9d680e714812a708d4259510ad", EnvoyAPI: "v1.36.2", Istio: "1.28", Go: "go1.26.8"}
	if got, want := i.String(), "breeze v0.4.0 (commit 3c1a0da0c4901b9d680e714812a708d4259510ad) for Envoy Go API v1.36.2 (Istio 1.28), go1.26.8"; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

// The Envoy Go API go.mod requires has its Istio release listed: moving
// to another Envoy means saying which Istio runs it.
func TestIstioOfGoModsEnvoy(t *testing.T) {
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/envoyproxy/envoy (v\S+)`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod requires no github.com/envoyproxy/envoy")
	}
	if r := IstioFor(string(m[1])); r == "unknown" {
		t.Errorf("go.mod requires Envoy %s: add the Istio release that runs it to istioForEnvoy (istio/proxy's ENVOY_VERSION.txt)", m[1])
	}
}
