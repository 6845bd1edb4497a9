// Package host runs Breeze (or any plugin of Envoy's Go network filter) outside
// Envoy: it drives Envoy's own Go shim package,
// github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network,
// over real TCP sockets, playing the part of Envoy's C++. Everything but Envoy's
// C++ is the real code path: the plugin's registration, the shim's config cache,
// filter maps, callbacks and finalizers.
//
// It replaces the C side with a Go implementation of api.NetworkCAPI (installed
// process-wide from init, see below) and calls the shim's unexported //export entry
// points through go:linkname, with the same arguments Envoy passes: wrapper
// pointers that live outside the Go heap, data as an array of {ptr,len} pairs in C
// memory.
//
// # Threads
//
// Each connection, downstream or upstream, has its own event-loop goroutine that
// makes all of that connection's callbacks, one at a time, like the Envoy worker
// thread that owns it. Writes and closes from the plugin (from any goroutine,
// including from inside a callback) copy their bytes at once and are posted to that
// loop, which runs them after the current callback returns, in order. A reader
// goroutine and a writer goroutine per connection do the socket I/O, so a slow peer
// never blocks callbacks. Upstream connections get their own loop goroutine, never a
// downstream connection's: as in Envoy (which picks a worker round-robin), upstream
// callbacks run concurrently with downstream ones.
//
// # One C API per process
//
// The shim has global state: one C API, one config parser, one set of filter maps,
// one "current library ID". The host installs a single dispatcher as the C API when
// the package is initialised; it routes every call by wrapper pointer to the Host
// that owns the connection, so several Hosts can run in one test binary.
// UpstreamConnect carries only the library ID the shim last saw (that of the most
// recent AddListener in the process), so upstream connections go to the newest open
// Host with that library ID. Importing this package into a binary that Envoy loads
// would replace the real C API: never import it from the plugin's main package.
//
// # Panics
//
// A panic in a plugin callback aborts Envoy, every connection of every service in
// the pod. The host recovers it, logs it with its stack, counts it
// (Stats.Panics, Stats.EnvoyWouldAbort) and closes only the connection concerned,
// so that tests can observe it. The plugin itself must never panic.
package host
