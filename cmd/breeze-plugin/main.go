// Command breeze-plugin is the Envoy plugin: built with
// `go build -buildmode=c-shared -o breeze.so`, loaded by Envoy's Go network
// filter (envoy.filters.network.golang) with plugin_name "breeze".
//
// This package has no tests of its own: api_impl's init calls into Envoy,
// so a test binary linking it dies at start. sotest/ builds breeze.so and
// loads it into a small C program that plays Envoy.
package main

import (
	"log/slog"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
	// Implements api.LogInfo & co. and api.GetLogLevel with Envoy's
	// envoyGoFilterLog and envoyGoFilterLogLevel
	// (contrib/golang/common/log/cgo.cc, linked into the network filter
	// as into the HTTP one). Envoy's network filter package does not
	// import it; its HTTP filter package does.
	_ "github.com/envoyproxy/envoy/contrib/golang/common/go/api_impl"

	// Every codec and L7 filter Breeze ships.
	_ "github.com/breeze-mesh/breeze/builtin"
	"github.com/breeze-mesh/breeze/filters/proxy"
	"github.com/breeze-mesh/breeze/internal/buildinfo"
	"github.com/breeze-mesh/breeze/internal/envoylog"
)

func init() {
	// Every line Breeze logs goes to Envoy's log, at Envoy's level.
	slog.SetDefault(slog.New(envoylog.New(envoyLog{})))
	slog.Info("breeze plugin loaded", buildinfo.Get().LogAttrs()...)
	proxy.Register()
}

// envoyLog is Envoy's log through its Go API.
type envoyLog struct{}

func (envoyLog) Log(l api.LogType, msg string) {
	switch l {
	case api.Trace:
		api.LogTrace(msg)
	case api.Debug:
		api.LogDebug(msg)
	case api.Info:
		api.LogInfo(msg)
	case api.Warn:
		api.LogWarn(msg)
	case api.Error:
		api.LogError(msg)
	default:
		api.LogCritical(msg)
	}
}

func (envoyLog) Level() api.LogType { return api.GetLogLevel() }

// main is never run: Envoy loads the library and calls its exported entry points.
func main() {}
