package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/breeze-mesh/breeze/controlplane"
	"github.com/breeze-mesh/breeze/deploy"
	"github.com/breeze-mesh/breeze/internal/release"
)

const validateUsage = `Checks Envoy bootstraps, Istio EnvoyFilters (and the sidecar annotations of
workloads in the same manifests), Breeze runner configs, plugin_configs and
service descriptions: with the own API types and validation rules of the
Envoy and Istio release this breeze is built for (breeze version; make
build ENVOY=1.39 builds one for Istio 1.31), and Breeze's own parser and
rules. Breeze patches must be pinned (proxyVersion) to the sidecars of a
release Breeze is built for; with --istio, to that release's, and service
descriptions are rendered for it. A directory stands for
its *.yaml, *.yml and *.json files. All files are also checked together, as
a mesh: EnvoyFilters across files, and MetaRouters, DestinationRules,
ServiceEntries and authorization policies as breeze xds translates them (a route to a subset no
DestinationRule defines, a host no ServiceEntry or Service declares, ...),
EnvoyFilters against the Services and ServiceEntries. Errors name the file,
the object and the field; every file gets a verdict. Exit status: 0 when
there are no errors (warnings only), 1 with errors, 2 for a usage mistake.
`

func validate(args []string) error {
	fs := newFlags("validate", "breeze validate [--istio RELEASE] FILE|DIR...", validateUsage)
	istio := fs.String("istio", "", "the Istio `RELEASE` the files are for: "+istioReleases())
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	if *istio != "" {
		if _, err := release.ForIstio(*istio); err != nil {
			return fs.usageErrorf("--istio: %v", err)
		}
		schemaNote(os.Stderr, *istio)
	}
	if len(args) == 0 {
		return fs.usageErrorf("no files to check: name files or directories, as in breeze validate envoy.yaml or breeze validate mesh/")
	}
	return validateTo(deploy.Options{Istio: *istio}, args, os.Stdout, os.Stderr)
}

// validateTo checks the files and directories paths name, writing each
// finding to stderr (errors first, then warnings) and each file's verdict
// to stdout, file by file. It fails when there is an error.
func validateTo(o deploy.Options, paths []string, stdout, stderr io.Writer) error {
	files, err := controlplane.ReadPaths(paths...)
	if err != nil {
		return err
	}
	dfiles := make([]deploy.File, len(files))
	for i, f := range files {
		dfiles[i] = deploy.File{Name: f.Name, Data: f.Data}
	}
	results := deploy.CheckFilesWith(o, dfiles...)
	byName := map[string]*deploy.FileResult{}
	for i := range results {
		byName[results[i].Name] = &results[i]
	}
	nerr, nbad := 0, 0
	for _, p := range controlplane.Lint(files...) {
		r := byName[p.File]
		switch {
		case r == nil: // not expected: every problem names one of the files
			fmt.Fprintln(stderr, "error:", p)
			nerr++
		case p.Warning:
			r.Warnings = append(r.Warnings, p)
		default:
			r.Errors = append(r.Errors, p)
		}
	}
	for _, r := range results {
		for _, e := range r.Errors {
			fmt.Fprintln(stderr, "error:", e)
		}
		for _, w := range r.Warnings {
			fmt.Fprintln(stderr, "warning:", w)
		}
		fmt.Fprintln(stdout, verdict(&r))
		if len(r.Errors) > 0 {
			nerr += len(r.Errors)
			nbad++
		}
	}
	if nerr > 0 {
		return fmt.Errorf("validate: %s in %d of %d files", count(nerr, "error"), nbad, len(results))
	}
	return nil
}

// verdict is the line that says how a file fared: "ok", or how many
// errors and warnings it has, and what it holds; or that it was not
// checked, and why.
func verdict(r *deploy.FileResult) string {
	what := ""
	if r.Kind != deploy.KindUnknown {
		what = " (" + r.What() + ")"
	}
	var parts []string
	if len(r.Errors) == 0 {
		parts = append(parts, "ok")
	} else {
		parts = append(parts, count(len(r.Errors), "error"))
	}
	if len(r.Warnings) > 0 {
		parts = append(parts, count(len(r.Warnings), "warning"))
	}
	if r.NotChecked != "" && len(r.Errors)+len(r.Warnings) == 0 {
		return fmt.Sprintf("%s: not checked%s: %s", r.Name, what, r.NotChecked)
	}
	return r.Name + ": " + strings.Join(parts, ", ") + what
}

func count(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
