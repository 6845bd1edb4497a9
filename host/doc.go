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
// Every connection, downstream or upstream, belongs to one event loop that makes
// all of its callbacks, one at a time, like the Envoy worker thread that owns it.
// Writes and closes from the plugin (from any goroutine, including from inside a
// callback) copy their bytes at once and are posted to that loop, which runs them
// after the current callback returns, in order, and writes what a turn queued at
// its end, non-blocking; what the socket refuses waits in the connection's write
// buffer, so a slow peer never blocks callbacks. Options.EventLoop chooses the
// loops:
//
//   - "workers" (the default), Envoy's model: a few worker goroutines (default
//     GOMAXPROCS, Options.Workers), each with its own epoll set. Connections are
//     assigned round-robin, downstream ones when accepted and upstream ones when
//     connected, as Envoy picks a worker. A worker reads a ready socket into its
//     own scratch buffer, calls OnData, runs what was posted and writes with one
//     writev; EPOLLOUT waits for what the socket refused. An idle connection holds
//     no goroutine and no buffer. A post from another goroutine puts the connection
//     on its worker's ready list and wakes the worker only if it is parked. The
//     sockets come from Go's net package (accept, dial with the connect timeout)
//     and are duplicated for the worker.
//   - "goroutines": each connection has a loop goroutine of its own, a reader
//     goroutine waiting in Go's poller, and a writer goroutine while the socket
//     refuses bytes.
//
// Connections a worker cannot drive as a plain socket (a TLS net.Conn from the
// listener or from Options.DialUpstream) get goroutines in either model. Upstream
// callbacks run on another loop than the downstream connection's that asked for
// the connection, concurrently with downstream ones, as in Envoy.
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
