// Command breeze is Breeze's command line: `breeze run` serves listeners
// with the MetaProtocol proxy on a host that drives Envoy's own Go shim, the
// same code path the Envoy plugin takes.
package main

import (
	"errors"
	"fmt"
	"os"
)

const usage = `usage: breeze <command> [flags]

commands:
  run      serve listeners from a runner config (-c FILE; embedded demo config if omitted)
  render   envoyfilter FILE: the Istio EnvoyFilters of a service description
  validate FILE...: check Envoy bootstraps, EnvoyFilters, runner and plugin configs
  xds      serve routes and endpoints over xDS from a directory of Istio/Aeraki YAML (-dir DIR)
  version  print the version
`

var version = "dev"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = run(os.Args[2:])
	case "render":
		err = render(os.Args[2:])
	case "validate":
		err = validate(os.Args[2:])
	case "xds":
		err = xds(os.Args[2:])
	case "version":
		fmt.Println("breeze", version)
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "breeze: unknown command %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "breeze:", err)
		if errors.As(err, new(usageError)) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
