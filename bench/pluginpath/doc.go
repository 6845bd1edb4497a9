// Package pluginpath drives Breeze's proxy filter (filters/proxy) the way
// Envoy does, from one goroutine and without the standalone host or
// sockets, so that a benchmark counts the plugin's own work per request
// and nothing else. Its tests are the package: see pluginpath_test.go.
package pluginpath
