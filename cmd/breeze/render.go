package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/breeze-mesh/breeze/deploy"
)

const renderUsage = `Translates a service description (YAML: host, vip, port, protocol,
direction, routes and clusters or xds; see deploy/README.md) into the Istio
EnvoyFilters that run Breeze in the sidecars, checked as 'breeze validate'
checks them. With xds, the routes and clusters are served by the xDS server
(breeze xds), not written into the EnvoyFilters: the description then has
none. FILE "-" reads standard input.
`

func render(args []string) error {
	f := newFlags("render", "breeze render envoyfilter [-o OUT] FILE", renderUsage)
	out := f.String("o", "", "write to this `FILE` instead of standard output")
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
	y, err := deploy.RenderFile(name, data)
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
