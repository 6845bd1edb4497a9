package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// runtimeGlibcOf is the glibc minor version (2.x) of the bases the
// controller image may run the cgo-built breeze on.
var runtimeGlibcOf = map[string]int{
	"gcr.io/distroless/base-debian12:nonroot": 36,
	"gcr.io/distroless/base-debian12":         36,
	"ubuntu:22.04":                            35,
}

// The Dockerfile's controller target: breeze at /breeze, run as
// `breeze controller` by a numeric non-root user (the chart's runAsNonRoot
// needs one to check), on a base whose glibc is at least that of the stage
// that builds it; and that stage's go build, run here with the same flags
// and environment, makes a breeze whose controller command runs. No Docker
// engine: the images themselves are not built.
func TestDockerfileController(t *testing.T) {
	stages, _ := parseDockerfile(readFile(t, "../Dockerfile"))
	build, image := stages["build-controller"], stages["controller"]
	if build == nil || image == nil {
		t.Fatalf("want stages build-controller and controller; have %v", slices.Sorted(func(yield func(string) bool) {
			for n := range stages {
				if !yield(n) {
					return
				}
			}
		}))
	}
	built, ok := glibcOf[build.from]
	if !ok {
		t.Fatalf("build-controller is FROM %s: want one of %v (a known glibc)", build.from, glibcOf)
	}
	if run, ok := runtimeGlibcOf[image.from]; !ok || run < built {
		t.Errorf("controller is FROM %s (glibc 2.%d): want one of %v with glibc >= 2.%d, build-controller's", image.from, run, runtimeGlibcOf, built)
	}
	for _, want := range []string{"COPY --from=build-controller /out/breeze /breeze", `ENTRYPOINT ["/breeze", "controller"]`, "USER 65532:65532"} {
		if !slices.Contains(image.lines, want) {
			t.Errorf("controller stage lacks %q; it has %q", want, image.lines)
		}
	}

	// The stage's own go build command and environment.
	var goBuild string
	env := os.Environ()
	for _, l := range build.lines {
		if strings.HasPrefix(l, "ENV ") {
			for _, kv := range strings.Fields(strings.TrimPrefix(l, "ENV ")) {
				if !strings.HasPrefix(kv, "PATH=") { // the image's Go; here, this test's
					env = append(env, kv)
				}
			}
		}
		if i := strings.Index(l, "go build "); strings.HasPrefix(l, "RUN ") && i >= 0 {
			goBuild = l[i:]
		}
	}
	if !strings.HasSuffix(goBuild, " -o /out/breeze ./cmd/breeze") || !slices.Contains(env, "CGO_ENABLED=1") {
		t.Fatalf("build-controller: want a RUN go build ... -o /out/breeze ./cmd/breeze with ENV CGO_ENABLED=1; have %q, env %q", goBuild, build.lines)
	}
	bin := filepath.Join(t.TempDir(), "breeze")
	cmdline := strings.NewReplacer("${BREEZE_VERSION}", "v0.0.0-dockerfile-test", "${BREEZE_COMMIT}", "dockerfile-test",
		" -o /out/breeze ", " -o "+bin+" ").Replace(goBuild)
	build1 := exec.Command("bash", "-c", cmdline)
	build1.Dir, build1.Env = "..", env
	if out, err := build1.CombinedOutput(); err != nil {
		t.Fatalf("the stage's build, %s: %v\n%s", cmdline, err, out)
	}
	version, _ := exec.Command(bin, "version").CombinedOutput()
	if !strings.Contains(string(version), "v0.0.0-dockerfile-test") || !strings.Contains(string(version), "dockerfile-test") {
		t.Errorf("breeze version of the stage's build: %q, want the -ldflags version and commit", version)
	}
	// The entrypoint's command: without -xds-address it says so and exits
	// (it would otherwise need an API server).
	out, err := exec.Command(bin, "controller").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "-xds-address is required") {
		t.Errorf("/breeze controller with no flags: %v %q, want a usage error naming -xds-address", err, out)
	}
	t.Logf("built with the stage's command: %s", cmdline)
	t.Logf("breeze version: %s; breeze controller: %s", strings.TrimSpace(string(version)), strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0]))
}
