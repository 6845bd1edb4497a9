package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/breeze-mesh/breeze/deploy"
)

const renderUsage = `usage: breeze render envoyfilter [-o OUT] FILE

Translates a service description (YAML: host, vip, port, protocol,
direction, routes and clusters or xds; see deploy/README.md) into the Istio
EnvoyFilters that run Breeze in the sidecars, checked as 'breeze validate'
checks them. With xds, the routes and clusters are served by the xDS server
(breeze xds), not written into the EnvoyFilters: the description then has
none. FILE "-" reads standard input.
`

func render(args []string) error {
	if len(args) == 0 || args[0] != "envoyfilter" {
		fmt.Fprint(os.Stderr, renderUsage)
		return errors.New("render: want 'render envoyfilter'")
	}
	fs := flag.NewFlagSet("render envoyfilter", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), renderUsage); fs.PrintDefaults() }
	out := fs.String("o", "", "write to this file instead of standard output")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("render envoyfilter: want one description file")
	}
	name := fs.Arg(0)
	var data []byte
	var err error
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
