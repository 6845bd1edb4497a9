// Command breeze is Breeze's command line: `breeze run` serves listeners
// with the MetaProtocol proxy on a host that drives Envoy's own Go shim, the
// same code path the Envoy plugin takes.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/breeze-mesh/breeze/internal/buildinfo"
)

// Exit statuses, as the README's "Command line" documents them.
const (
	exitOK      = 0
	exitFailure = 1 // the command failed: a bad config, a port in use, a check that found errors
	exitUsage   = 2 // an unknown command, a bad flag or argument
)

const usage = `usage: breeze <command> [flags] [arguments]

commands:
  run       serve the listeners of a runner config (-c FILE; the embedded demo config without it)
  render    print the Istio EnvoyFilters of a service description (render envoyfilter FILE)
  validate  check Envoy bootstraps, EnvoyFilters, runner and plugin configs, and a mesh's
            MetaRouters, DestinationRules, ServiceEntries and policies together (validate FILE|DIR...)
  xds       serve routes and endpoints over xDS from a directory of Istio/Aeraki YAML (-dir DIR)
            and from Dubbo service registries (-zookeeper HOST:PORT)
  registry  export the ServiceEntries of a Dubbo service registry's providers as YAML
            (registry export -zookeeper HOST:PORT [-watch] [-o DIR])
  controller  in Kubernetes: write Breeze's EnvoyFilters for Services and ServiceEntries and
            serve their routes and endpoints over xDS from Istio/Aeraki resources
  version   print the version, the commit, and the Envoy Go API and Istio release built for
  help      print a command's help (help COMMAND, or breeze COMMAND --help)

Flags follow the command; -flag and --flag are the same.
Exit status: 0 success, 1 failure, 2 usage error (unknown command, bad flag or argument).
`

// commands maps a command to its function, which parses its own flags.
var commands = map[string]func(args []string) error{
	"run":        run,
	"render":     render,
	"validate":   validate,
	"xds":        xds,
	"registry":   registryCmd,
	"controller": controllerCmd,
	"version":    versionCmd,
}

func main() {
	os.Exit(cli(os.Args[1:]))
}

// cli runs the command line args and returns the exit status.
func cli(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "-help", "--help":
		fmt.Print(usage)
		return exitOK
	case "-version", "--version":
		name = "version"
	case "help":
		switch {
		case len(rest) == 0:
			fmt.Print(usage)
			return exitOK
		case len(rest) > 1:
			fmt.Fprintf(os.Stderr, "breeze help: want one command, got %d\n%s", len(rest), usage)
			return exitUsage
		}
		name, rest = rest[0], []string{"--help"}
		switch name {
		case "help", "-h", "-help", "--help":
			fmt.Print(usage)
			return exitOK
		}
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "breeze: unknown command %q\n%s", name, usage)
		return exitUsage
	}
	err := cmd(rest)
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, errHelp):
		return exitOK
	case errors.As(err, &ue):
		// As the go command does: the mistake, the synopsis, where to read more.
		fmt.Fprintf(os.Stderr, "breeze %s: %v\nusage: %s\nRun 'breeze %s --help' for details.\n", ue.cmd, ue.err, ue.synopsis, ue.cmd)
		return exitUsage
	default:
		fmt.Fprintln(os.Stderr, "breeze:", err)
		return exitFailure
	}
}

func versionCmd(args []string) error {
	f := newFlags("version", "breeze version",
		"Prints the version, the commit, and the Envoy Go API and Istio release Breeze\n"+
			"was built for: the plugin works only in that Envoy. 'breeze --version' is the same.\n")
	args, err := f.parse(args)
	if err != nil {
		return err
	}
	if err := f.noArgs(args, nil); err != nil {
		return err
	}
	fmt.Println(buildinfo.Get())
	return nil
}
