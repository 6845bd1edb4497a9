// Command plugin is breeze.so for the in-Envoy harness (bench/inenvoy):
// the plugin as shipped (cmd/breeze-plugin: every codec and filter, the
// proxy registered) plus one export, breezeHarnessAllocs, through which
// the harness reads the Go heap's allocation count. Logging goes to the
// harness's envoyGoFilterLog as in Envoy only for the shim's own lines;
// Breeze's go to slog's default (the harness sees no request-path log).
package main

// #include <stdint.h>
import "C"

import (
	"runtime/metrics"

	_ "github.com/envoyproxy/envoy/contrib/golang/common/go/api_impl"

	_ "github.com/breeze-mesh/breeze/builtin"
	"github.com/breeze-mesh/breeze/filters/proxy"
)

func init() { proxy.Register() }

// breezeHarnessAllocs returns the number of heap objects the Go runtime
// has allocated since it started.
//
//export breezeHarnessAllocs
func breezeHarnessAllocs() C.uint64_t {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:objects"}}
	metrics.Read(s)
	return C.uint64_t(s[0].Value.Uint64())
}

func main() {}
