package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/breeze-mesh/breeze/deploy"
	"github.com/breeze-mesh/breeze/internal/release"
)

// schemaNote says, on standard error, when files for one Istio release are
// checked with another release's API types (those this breeze links): a
// field Envoy added since, or removed, is only caught by a breeze built for
// the release the files are for.
func schemaNote(stderr io.Writer, istio string) {
	want, err := release.ForIstio(istio)
	if err != nil || want.Istio == deploy.DefaultIstio() {
		return
	}
	have, _ := release.ForIstio(deploy.DefaultIstio())
	arg := ""
	if want != release.Default() {
		arg = " ENVOY=" + want.Envoy
	}
	fmt.Fprintf(stderr, "note: checked with the API types of %s, which this breeze is built for; for %s's own: make build%s\n", have, want, arg)
}

// istioReleases lists the releases --istio takes: "1.28 or 1.31".
func istioReleases() string {
	s := make([]string, len(release.All))
	for i, r := range release.All {
		s[i] = r.Istio
	}
	return strings.Join(s, " or ")
}

const renderUsage = `Translates a service description (YAML: host, vip, port, protocol,
direction, routes and clusters or xds; see deploy/README.md) into the Istio
EnvoyFilters that run Breeze in the sidecars, checked as 'breeze validate'
checks them. With xds, the routes and clusters are served by the xDS server
(breeze xds), not written into the EnvoyFilters: the description then has
none. FILE "-" reads standard input.

The EnvoyFilters are for the sidecars of one Istio release (--istio, else
the description's istio, else the release this breeze is built for; see
breeze version): their patches are pinned to its proxyVersion, and
breeze.so must be built for its Envoy. They are checked with the Envoy and
Istio API types this breeze links: those of another release are checked
by a breeze built for it (make build ENVOY=1.39 for Istio 1.31).
`

func render(args []string) error {
	f := newFlags("render", "breeze render envoyfilter [--istio RELEASE] [-o OUT] FILE", renderUsage)
	out := f.String("o", "", "write to this `FILE` instead of standard output")
	istio := f.String("istio", "", "the Istio `RELEASE` whose sidecars the EnvoyFilters are for: "+istioReleases())
	args, err := f.parse(args)
	if err != nil {
		return err
	}
	switch {
	case len(args) == 0:
		return f.usageErrorf("nothing to render: name what and from which file, as in breeze render envoyfilter greeter.yaml")
	case args[0] != "envoyfilter":
		return f.usageErrorf("cannot render %q: envoyfilter is the one kind render makes", args[0])
	case len(args) != 2:
		return f.usageErrorf("envoyfilter wants one description file, got %d", len(args)-1)
	}
	if *istio != "" {
		if _, err := release.ForIstio(*istio); err != nil {
			return f.usageErrorf("--istio: %v", err)
		}
		schemaNote(os.Stderr, *istio)
	}
	name := args[1]
	var data []byte
	if name == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(name)
	}
	if err != nil {
		return err
	}
	y, err := deploy.RenderFileFor(*istio, name, data)
	if err != nil {
		// One line per mistake, each naming the file.
		var errs []error
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			errs = j.Unwrap()
		} else {
			errs = []error{err}
		}
		for i, e := range errs {
			errs[i] = fmt.Errorf("%s: %w", name, e)
		}
		return errors.Join(errs...)
	}
	if *out == "" {
		_, err = os.Stdout.Write(y)
		return err
	}
	return os.WriteFile(*out, y, 0o644)
}
