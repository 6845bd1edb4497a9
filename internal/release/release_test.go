package release

import (
	"os"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"
)

const root = "../../"

// requirement is the version a go.mod file requires of path, "" if none.
func requirement(t *testing.T, modfile, path string) string {
	t.Helper()
	mod, err := os.ReadFile(root + modfile)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(path) + ` (v\S+)`).FindSubmatch(mod)
	if m == nil {
		return ""
	}
	return string(m[1])
}

// Each target's go.mod links the Envoy Go API it names, and checks configs
// with that Envoy's API types (go-control-plane) and its Istio release's
// (istio.io/api).
func TestModfilesPinTheirRelease(t *testing.T) {
	for i, r := range All {
		want := "envoy-" + r.Envoy + ".mod"
		if i == 0 {
			want = "go.mod"
		}
		if r.Modfile != want {
			t.Errorf("%s: Modfile %q, want %q (the Makefile and the Dockerfile derive it from the Envoy release)", r, r.Modfile, want)
		}
		if got := requirement(t, r.Modfile, EnvoyModule); got != r.EnvoyGoAPI {
			t.Errorf("%s: %s requires %s %s, want %s", r, r.Modfile, EnvoyModule, got, r.EnvoyGoAPI)
		}
		if got := requirement(t, r.Modfile, "github.com/envoyproxy/go-control-plane/envoy"); !strings.HasPrefix(got, "v"+r.Envoy+".") {
			t.Errorf("%s: %s requires go-control-plane/envoy %s, want Envoy %s's API types (v%s.x)", r, r.Modfile, got, r.Envoy, r.Envoy)
		}
		if got := requirement(t, r.Modfile, "istio.io/api"); !strings.HasPrefix(got, "v"+r.Istio+".") {
			t.Errorf("%s: %s requires istio.io/api %s, want Istio %s's (v%s.x)", r, r.Modfile, got, r.Istio, r.Istio)
		}
		if !strings.HasSuffix(r.EnvoyImage, ":contrib-v"+r.Envoy+"."+strings.SplitN(strings.TrimPrefix(r.EnvoyGoAPI, "v"+r.Envoy+"."), ".", 2)[0]) {
			t.Errorf("%s: EnvoyImage %q is not the contrib image of %s", r, r.EnvoyImage, r.EnvoyGoAPI)
		}
		if !strings.HasPrefix(r.IstioProxyImage, "istio/proxyv2:"+r.Istio+".") {
			t.Errorf("%s: IstioProxyImage %q is not an Istio %s proxy", r, r.IstioProxyImage, r.Istio)
		}
	}
}

func TestBuiltFrom(t *testing.T) {
	for _, tc := range []struct {
		name string
		deps []*debug.Module
		want string // Istio release, "" for none
	}{
		{"Envoy's Go API", []*debug.Module{{Path: EnvoyAPITypes, Version: "v1.36.0"}, {Path: EnvoyModule, Version: "v1.39.0"}}, "1.31"},
		{"only the API types", []*debug.Module{{Path: EnvoyAPITypes, Version: "v1.39.0"}}, "1.31"},
		{"replaced", []*debug.Module{{Path: EnvoyModule, Version: "v1.39.0", Replace: &debug.Module{Path: EnvoyModule, Version: "v1.36.2"}}}, "1.28"},
		{"no target", []*debug.Module{{Path: EnvoyModule, Version: "v1.37.0"}}, ""},
		{"neither", []*debug.Module{{Path: "google.golang.org/grpc", Version: "v1.75.1"}}, ""},
	} {
		r, ok := builtFrom(tc.deps)
		if ok != (tc.want != "") || r.Istio != tc.want {
			t.Errorf("%s: got %v, %v; want Istio %q", tc.name, r, ok, tc.want)
		}
	}
}

func TestLookups(t *testing.T) {
	for _, tc := range []struct{ istio, envoy, want string }{
		{"1.28", "v1.36.2", "1.28"}, {"1.28.3", "1.36", "1.28"},
		{"1.31", "v1.39.0", "1.31"}, {"1.31.0-beta.1", "1.39.1-dev", "1.31"},
	} {
		if r, err := ForIstio(tc.istio); err != nil || r.Istio != tc.want {
			t.Errorf("ForIstio(%q) = %v, %v; want Istio %s", tc.istio, r, err, tc.want)
		}
		if r, ok := ForEnvoy(tc.envoy); !ok || r.Istio != tc.want {
			t.Errorf("ForEnvoy(%q) = %v, %v; want Istio %s", tc.envoy, r, ok, tc.want)
		}
	}
	if _, err := ForIstio("1.29"); err == nil || err.Error() != `no Breeze build for Istio "1.29": Breeze is built for Istio 1.28 (Envoy 1.36), Istio 1.31 (Envoy 1.39)` {
		t.Errorf("ForIstio(1.29): %v", err)
	}
	if r, ok := ForEnvoy("v1.37.0"); ok {
		t.Errorf("ForEnvoy(v1.37.0) = %v, want none", r)
	}
}

func TestProxyVersion(t *testing.T) {
	r28, r31 := All[0], All[1]
	if got := r31.ProxyVersion(); got != `^1\.31\.` {
		t.Errorf("ProxyVersion: %q", got)
	}
	for _, tc := range []struct {
		re       string
		r28, r31 bool
	}{
		{`^1\.28\.`, true, false}, {`^1\.31\.`, false, true}, {`^1\.(28|31)\.`, true, true},
		{`^1\.29\.`, false, false}, {`.*`, true, true}, {`(`, false, false},
		{`^1\.3`, false, true}, // 1.3 would also match 1.30: the check is per release
	} {
		if got := r28.ProxyVersionMatches(tc.re); got != tc.r28 {
			t.Errorf("%q matches Istio 1.28: %v, want %v", tc.re, got, tc.r28)
		}
		if got := r31.ProxyVersionMatches(tc.re); got != tc.r31 {
			t.Errorf("%q matches Istio 1.31: %v, want %v", tc.re, got, tc.r31)
		}
	}
}

// The Makefile builds the same targets, with the same glibc ceilings.
func TestMakefileAgrees(t *testing.T) {
	mk, err := os.ReadFile(root + "Makefile")
	if err != nil {
		t.Fatal(err)
	}
	value := func(name string) string {
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s*\??:?=\s*(.*)$`).FindSubmatch(mk)
		if m == nil {
			t.Errorf("Makefile sets no %s", name)
			return ""
		}
		return strings.TrimSpace(string(m[1]))
	}
	var targets []string
	for _, r := range All {
		targets = append(targets, r.Envoy)
		if got := value("MAX_GLIBC_" + r.Envoy); got != r.MaxGlibc {
			t.Errorf("Makefile: MAX_GLIBC_%s = %q, want %q", r.Envoy, got, r.MaxGlibc)
		}
	}
	if got := value("ENVOY_TARGETS"); got != strings.Join(targets, " ") {
		t.Errorf("Makefile: ENVOY_TARGETS = %q, want %q", got, strings.Join(targets, " "))
	}
	for _, v := range []string{"ENVOY", "ENVOY_DEFAULT"} {
		if got := value(v); got != Default().Envoy {
			t.Errorf("Makefile: %s = %q, want the default target %q", v, got, Default().Envoy)
		}
	}
}

// The Dockerfile builds the default target by default, derives the other
// targets' go.mod the way All names them, and knows every target's images.
func TestDockerfileAgrees(t *testing.T) {
	b, err := os.ReadFile(root + "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	d := Default()
	for _, want := range []string{
		"ARG ENVOY=" + d.Envoy + "\n",
		"ARG ENVOY_IMAGE=" + d.EnvoyImage + "\n",
		"ARG ISTIO_PROXY_IMAGE=" + d.IstioProxyImage + "\n",
		`if [ "${ENVOY}" != ` + d.Envoy + ` ]; then modfile="envoy-${ENVOY}.mod"; fi`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile has no %q", want)
		}
	}
	for _, r := range All[1:] {
		for _, want := range []string{"--build-arg ENVOY=" + r.Envoy, r.IstioProxyImage, r.EnvoyImage} {
			if !strings.Contains(df, want) {
				t.Errorf("Dockerfile: no %q for %s", want, r)
			}
		}
	}
}

// The README's version table has a row per target, as it says them.
func TestReadmeTable(t *testing.T) {
	b, err := os.ReadFile(root + "README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range All {
		if row := ReadmeRow(r); !strings.Contains(string(b), row+"\n") {
			t.Errorf("README.md has no row\n%s", row)
		}
	}
}

// ReadmeRow is the README version table's row of a target.
func ReadmeRow(r Release) string {
	cmd := "`make plugin`"
	if r != Default() {
		cmd = "`make plugin ENVOY=" + r.Envoy + "`"
	}
	return "| " + cmd + " | `" + EnvoyModule + " " + r.EnvoyGoAPI + "` (`" + r.Modfile + "`) | `" + r.EnvoyImage + "` | Istio " + r.Istio + ": `" + r.IstioProxyImage + "` (Envoy " + r.Envoy + ") | " + r.MaxGlibc + " |"
}

func TestForFunc(t *testing.T) {
	if r, ok := ForFunc("github.com/no/such", TestForFunc); ok {
		t.Errorf("ForFunc of a module that holds no such function: %v", r)
	}
	if r, ok := ForFunc(EnvoyModule, nil); ok {
		t.Errorf("ForFunc(nil): %v", r)
	}
}
