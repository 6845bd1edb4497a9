// Package builtin links every codec and L7 filter that ships with Breeze.
// The Envoy plugin (cmd/breeze-plugin) and the standalone runner
// (cmd/breeze) both import it, so they offer the same set: a new codec or
// filter is added here, once.
package builtin

import (
	// Codecs register themselves by name (codecs.Register).
	_ "github.com/breeze-mesh/breeze/codecs/dubbo"
	_ "github.com/breeze-mesh/breeze/codecs/thrift"

	// L7 filters register themselves by name (filter.Register); the router
	// is not listed: it is always the last filter of every chain.
	_ "github.com/breeze-mesh/breeze/filters/authz"
	_ "github.com/breeze-mesh/breeze/filters/fault"
	_ "github.com/breeze-mesh/breeze/filters/globalratelimit"
	_ "github.com/breeze-mesh/breeze/filters/istiostats"
	_ "github.com/breeze-mesh/breeze/filters/localratelimit"
	_ "github.com/breeze-mesh/breeze/filters/mutation"
	_ "github.com/breeze-mesh/breeze/filters/require"
)
