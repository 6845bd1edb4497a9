// Command breeze-plugin is the Envoy plugin: built with
// `go build -buildmode=c-shared -o breeze.so`, loaded by Envoy's Go network
// filter (envoy.filters.network.golang) with plugin_name "breeze".
package main

import (
	// Every codec and L7 filter Breeze ships.
	_ "github.com/breeze-mesh/breeze/builtin"
	"github.com/breeze-mesh/breeze/filters/proxy"
)

func init() {
	proxy.Register()
}

// main is never run: Envoy loads the library and calls its exported entry points.
func main() {}
