package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network"
)

// Options configure a Host. Zero values select the defaults documented per field.
type Options struct {
	// LibraryID is the filter config's library_id, passed to the shim with every
	// listener config. Default "breeze".
	LibraryID string
	// Logger receives the host's own logs. Default slog.Default().
	Logger *slog.Logger
	// ConnectTimeout bounds an upstream dial, like the plainText cluster's
	// connect_timeout. Default 5s.
	ConnectTimeout time.Duration
	// MaxUpstreamConnections is the plainText cluster's circuit breaker: upstream
	// connections connecting or open at once. Past it, connects fail with Overflow.
	// Default 1024 (Envoy's default max_connections / max_requests).
	MaxUpstreamConnections int
	// ReadSize is the largest chunk read from a socket at once; each chunk is one
	// slice of the data passed to OnData. Default 16 KiB (an Envoy buffer slice).
	ReadSize int
	// WriteBufferLimit is a downstream connection's per_connection_buffer_limit_bytes,
	// used the way Envoy's own filters use its watermarks: once more than this many
	// bytes wait in the connection's write buffer, the host stops reading from it
	// (readDisable), and reads again once the buffer has drained to half of it. A
	// client that sends requests without reading the replies is then held back by
	// TCP instead of growing the write buffer without end. Envoy does NOT do this
	// for the Go filter (its watermark callbacks are empty: golang.h:72-73), so this
	// bound is the standalone host's own. Default 1 MiB (Envoy's default limit);
	// negative: no limit, as inside Envoy.
	WriteBufferLimit int
	// FilterState, if set, gives each downstream connection, by the client's
	// address, the strings earlier filters of Envoy's chain would have put
	// in its filter state before Breeze's (e.g. set_filter_state storing
	// the caller's SPIFFE id), for the plugin to read with
	// internal/filterstate.Get. It runs on the accepting goroutine.
	FilterState func(remoteAddr string) map[string]string
	// HandshakeFilterState is FilterState for what earlier filters store
	// when the downstream TLS handshake completes (set_filter_state's
	// on_downstream_tls_handshake, e.g. the peer's URI SAN): in Envoy that
	// is the connection's Connected event, after every filter's
	// onNewConnection and before the first onData (the TLS transport
	// socket delivers no data before it). The host sets it there, so a
	// plugin that reads it in OnNewConnection sees nothing, as in Envoy.
	HandshakeFilterState func(remoteAddr string) map[string]string
	// DialUpstream, if set, opens every upstream connection in place of a
	// plain TCP dial: the plainText cluster's transport socket (e.g. TLS
	// with the pod's certificate, as Istio's mTLS gives it). ctx carries
	// ConnectTimeout and is cancelled by Close.
	DialUpstream func(ctx context.Context, addr string) (net.Conn, error)
	// EventLoop chooses what drives the connections (see the package
	// documentation, "Threads"): EventLoopWorkers, a few worker goroutines
	// each with its own epoll loop, as Envoy's worker threads; or
	// EventLoopGoroutines, goroutines of each connection's own. Connections
	// a worker cannot drive (not a plain TCP socket: TLS) always get
	// goroutines. Default: $BREEZE_HOST_EVENT_LOOP (EventLoopEnv) if set,
	// else EventLoopWorkers.
	EventLoop string
	// Workers is the number of worker goroutines (EventLoopWorkers).
	// Default GOMAXPROCS, as Envoy's --concurrency defaults to the cores.
	Workers int
	// UpstreamWorker chooses the worker of an upstream connection
	// (EventLoopWorkers): UpstreamWorkerRoundRobin, as Envoy's Go filter
	// does (cgo.cc posts the connect to a worker picked round-robin, so
	// the plugin's upstream callbacks run concurrently with the downstream
	// ones: what the proxy's tests need to exercise); or
	// UpstreamWorkerCaller, the worker whose callback asked for it, as
	// Envoy's C++ proxies keep their connection pools per worker: a
	// request whose upstream connection lives on its downstream's worker
	// crosses no thread. Default: $BREEZE_HOST_UPSTREAM_WORKER
	// (UpstreamWorkerEnv) if set, else UpstreamWorkerRoundRobin.
	UpstreamWorker string
}

// The values of Options.UpstreamWorker.
const (
	UpstreamWorkerRoundRobin = "round-robin"
	UpstreamWorkerCaller     = "caller"
)

// UpstreamWorkerEnv names the environment variable that chooses
// Options.UpstreamWorker when it is unset.
const UpstreamWorkerEnv = "BREEZE_HOST_UPSTREAM_WORKER"

// The values of Options.EventLoop.
const (
	EventLoopWorkers    = "workers"
	EventLoopGoroutines = "goroutines"
)

// EventLoopEnv names the environment variable that chooses the event loop
// of Hosts whose Options leave it unset: a way to measure both drivers
// with the same binary or benchmark (breeze run, bench/), without a
// configuration field for what is the standalone host's own business.
const EventLoopEnv = "BREEZE_HOST_EVENT_LOOP"

const (
	defaultLibraryID      = "breeze"
	defaultConnectTimeout = 5 * time.Second
	defaultMaxUpstream    = 1024
	defaultReadSize       = 16 << 10
	defaultWriteLimit     = 1 << 20
	// readQueue chunks may wait for the event loop before the reader stops reading,
	// which pushes back on the peer through TCP (at most 256 KiB with the default
	// ReadSize; Envoy's default per_connection_buffer_limit_bytes is 1 MiB). Each
	// slot of the channel costs every connection, idle ones too (40 bytes).
	readQueue = 16
)

// Host drives Envoy's Go network-filter shim the way Envoy's C++ does, over real
// sockets. See the package documentation.
type Host struct {
	opts  Options
	log   *slog.Logger
	libID cString // C copy of opts.LibraryID, for the config entry point

	ctx    context.Context // cancelled by Close: aborts dials and accept back-off
	cancel context.CancelFunc

	mu        sync.Mutex
	idle      *sync.Cond // signalled when active drops to zero
	active    int        // tracked goroutines (accept loops, connection loops, dials)
	closed    bool
	listeners []*listener
	endpoints map[*endpoint]struct{}
	upInUse   int // upstream connections counted by the circuit breaker
	// workers start with the first connection (EventLoopWorkers), and
	// stop in Close once every connection has ended.
	workers    []*worker
	nextWorker uint32
	noWorkers  bool // they could not start: goroutines for every connection

	st counters
}

type listener struct {
	ln         net.Listener
	pluginName string
	name       cString // C copy of pluginName
	configID   uint64

	warnedZeroSize atomic.Bool
}

// counters back Stats; see there.
type counters struct {
	downAccepted, downClosed, downFinalized, downFilterless  atomic.Uint64
	downUnfinalizable                                        atomic.Uint64
	downOpen                                                 atomic.Int64
	upConnects, upReady, upFailures, upOverflows, upRejected atomic.Uint64
	upClosed, upFinalized                                    atomic.Uint64
	upOpen                                                   atomic.Int64
	droppedWrites, panics, wouldAbort                        atomic.Uint64
	readPauses                                               atomic.Uint64
	directWrites, writerBatches                              atomic.Uint64
	readPaused, writeBuffered, writePeak                     atomic.Int64
}

// Stats is a snapshot of a Host's counters, for tests (leak checks in particular)
// and for the standalone runner.
type Stats struct {
	// DownstreamAccepted counts accepted connections handed to OnDownstreamConnection.
	DownstreamAccepted uint64
	// DownstreamOpen is the number of downstream sockets not yet closed.
	DownstreamOpen int64
	// DownstreamClosed counts close events (LocalClose or RemoteClose) delivered.
	DownstreamClosed uint64
	// DownstreamFinalized counts DownstreamFinalize calls: the shim's finalizer on
	// the plugin's filter object ran.
	DownstreamFinalized uint64
	// DownstreamFilterless counts connections for which the shim stored no filter
	// (the plugin panicked in CreateFilter, or the config was unknown). No finalizer
	// exists for them; the host released their wrapper itself.
	DownstreamFilterless uint64
	// DownstreamUnfinalizable counts connections whose filter is a pointer to a
	// zero-size type: the shim's SetFinalizer silently does nothing on those, so
	// Envoy never frees the connection's FilterWrapper (a leak per connection).
	// The host releases the wrapper itself when the connection ends. When
	// everything is released: DownstreamAccepted == DownstreamFinalized +
	// DownstreamFilterless + DownstreamUnfinalizable.
	DownstreamUnfinalizable uint64

	// UpstreamConnects counts UpstreamConnect calls routed to this Host.
	UpstreamConnects uint64
	// UpstreamReady counts OnUpstreamConnectionReady deliveries.
	UpstreamReady uint64
	// UpstreamFailures counts OnUpstreamConnectionFailure deliveries (any reason).
	UpstreamFailures uint64
	// UpstreamOverflows counts failures with reason Overflow (circuit breaker).
	UpstreamOverflows uint64
	// UpstreamRejected counts connects to an address that is not a literal ip:port.
	// Envoy throws on these and aborts; the host fails them with
	// LocalConnectionFailure. Also counted in EnvoyWouldAbort.
	UpstreamRejected uint64
	// UpstreamOpen is the number of upstream connections connecting or open.
	UpstreamOpen int64
	// UpstreamClosed counts close events delivered on upstream connections.
	UpstreamClosed uint64
	// UpstreamFinalized counts UpstreamFinalize calls. When everything is released:
	// UpstreamConnects == UpstreamFinalized.
	UpstreamFinalized uint64

	// DroppedWrites counts writes discarded because the connection was closed or
	// had already ended its write side. Envoy drops these too (with a warning).
	DroppedWrites uint64
	// Panics counts panics recovered from plugin callbacks.
	Panics uint64
	// ReadPauses counts the times a downstream connection stopped being read
	// because its write buffer went above Options.WriteBufferLimit.
	ReadPauses uint64
	// ReadPaused is the number of downstream connections not being read now
	// because of their write buffer.
	ReadPaused int64
	// WriteBuffered is the number of bytes written by plugins and not yet on a
	// socket, over all connections.
	WriteBuffered int64
	// WriteBufferedPeak is the highest WriteBuffered has been.
	WriteBufferedPeak int64
	// DirectWrites counts writev calls made by a connection's loop at the
	// end of its turn (the common case, as Envoy writes from its worker);
	// WriterBatches the writes of what a socket did not take at once: by
	// the writer goroutine (goroutine driver), or by the worker once the
	// socket takes more (workers driver).
	DirectWrites, WriterBatches uint64
	// EnvoyWouldAbort counts events after which a real Envoy process would have
	// aborted or corrupted memory: recovered panics, connections the shim created
	// no filter for, malformed upstream addresses, GetString on filter state, a
	// read-only filter-state key set twice. Tests should assert it stays zero.
	EnvoyWouldAbort uint64
	// StaleCalls is process-wide, not per Host: C API calls with a finalized or
	// unknown wrapper (a use-after-free in Envoy).
	StaleCalls uint64
}

// Host registry, for routing UpstreamConnect by library ID (see upstreamConnect).
var hosts struct {
	mu   sync.Mutex
	list []*Host
}

// configMu serialises calls into envoyGoFilterOnNetworkFilterConfig: it writes the
// shim's unsynchronised libraryID global.
var configMu sync.Mutex

// New returns a Host with no listeners.
func New(opts Options) *Host {
	if opts.LibraryID == "" {
		opts.LibraryID = defaultLibraryID
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = defaultConnectTimeout
	}
	if opts.MaxUpstreamConnections <= 0 {
		opts.MaxUpstreamConnections = defaultMaxUpstream
	}
	if opts.ReadSize <= 0 {
		opts.ReadSize = defaultReadSize
	}
	if opts.WriteBufferLimit == 0 {
		opts.WriteBufferLimit = defaultWriteLimit
	}
	opts.EventLoop = choice("event loop", "Options.EventLoop", EventLoopEnv, opts.EventLoop, EventLoopWorkers, EventLoopGoroutines)
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	opts.UpstreamWorker = choice("upstream worker", "Options.UpstreamWorker", UpstreamWorkerEnv, opts.UpstreamWorker, UpstreamWorkerRoundRobin, UpstreamWorkerCaller)
	h := &Host{
		opts:      opts,
		log:       opts.Logger,
		libID:     newCString(opts.LibraryID),
		endpoints: make(map[*endpoint]struct{}),
	}
	h.idle = sync.NewCond(&h.mu)
	h.ctx, h.cancel = context.WithCancel(context.Background())
	hosts.mu.Lock()
	hosts.list = append(hosts.list, h)
	hosts.mu.Unlock()
	return h
}

// LibraryID returns the library ID this Host passes to the shim.
func (h *Host) LibraryID() string { return h.opts.LibraryID }

// AddListener registers config for pluginName with the shim
// (envoyGoFilterOnNetworkFilterConfig, once, as Envoy does per filter config) and
// serves every connection accepted on ln with it, until Close. config may be nil
// (an unset plugin_config). The Host takes ownership of ln.
//
// Unlike Envoy, which accepts any plugin_name and aborts on the first connection
// when no plugin of that name is registered, AddListener fails early.
//
// The shim keeps the library ID of the latest config in a global that
// CreateUpstreamConn reads without synchronisation: call AddListener before
// traffic flows, or the race detector will (rightly) report it.
func (h *Host) AddListener(ln net.Listener, pluginName string, config *anypb.Any) error {
	if network.GetNetworkFilterConfigFactory(pluginName) == nil {
		return fmt.Errorf("host: no network filter plugin registered as %q (Envoy would abort on the first connection)", pluginName)
	}
	var cfg []byte
	if config != nil {
		var err error
		// Envoy passes plugin_config.SerializeToString(); nil is an unset Any.
		if cfg, err = (proto.MarshalOptions{Deterministic: true}).Marshal(config); err != nil {
			return fmt.Errorf("host: serializing plugin config: %w", err)
		}
	}
	if h.isClosed() {
		return errors.New("host: closed")
	}
	configID, err := h.configure(cfg)
	if err != nil {
		return err
	}
	l := &listener{ln: ln, pluginName: pluginName, name: newCString(pluginName), configID: configID}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		l.name.free()
		return errors.New("host: closed")
	}
	h.listeners = append(h.listeners, l)
	h.active++
	h.mu.Unlock()
	go h.acceptLoop(l)
	return nil
}

// configure calls the shim's config entry point. The config parser is plugin code:
// a panic there would abort Envoy at config load; here it is an error.
func (h *Host) configure(cfg []byte) (id uint64, err error) {
	c := newCString(string(cfg))
	defer c.free()
	configMu.Lock()
	defer configMu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			h.st.panics.Add(1)
			h.st.wouldAbort.Add(1)
			h.log.Error("host: config parser panicked; Envoy would abort", "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("host: config parser panicked: %v", r)
		}
	}()
	id = onNetworkFilterConfig(h.libID.ptr(), h.libID.len(), c.ptr(), c.len())
	if id == 0 {
		return 0, errors.New("host: shim returned config id 0")
	}
	return id, nil
}

func (h *Host) acceptLoop(l *listener) {
	defer h.untrack()
	var delay time.Duration
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || h.ctx.Err() != nil {
				return
			}
			// Transient accept errors (EMFILE...): back off like net/http does
			// rather than spin.
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay *= 2; delay > time.Second {
				delay = time.Second
			}
			h.log.Warn("host: accept failed; retrying", "listener", l.ln.Addr().String(), "err", err, "delay", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-h.ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		delay = 0
		h.serveDownstream(l, nc)
	}
}

// Close stops the listeners, closes every connection (each open connection gets a
// LocalClose event, pending dials fail with LocalConnectionFailure) and waits for
// all of the Host's goroutines. Finalizers may still run later and are still
// counted in Stats. Close is idempotent.
func (h *Host) Close() error {
	h.mu.Lock()
	if h.closed {
		for h.active > 0 {
			h.idle.Wait()
		}
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	lns := h.listeners
	eps := make([]*endpoint, 0, len(h.endpoints))
	for e := range h.endpoints {
		eps = append(eps, e)
	}
	h.mu.Unlock()

	h.cancel()
	var errs []error
	for _, l := range lns {
		if err := l.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	for _, e := range eps {
		e.post(task{kind: taskShutdown})
	}

	h.mu.Lock()
	for h.active > 0 {
		h.idle.Wait()
	}
	workers := h.workers
	h.workers = nil
	h.mu.Unlock()
	// Every connection has ended: nothing can post to a worker any more.
	for _, w := range workers {
		w.stop()
	}

	// No connection can start any more: the C copies of the names can go.
	for _, l := range lns {
		l.name.free()
	}
	hosts.mu.Lock()
	for i, x := range hosts.list {
		if x == h {
			hosts.list = append(hosts.list[:i:i], hosts.list[i+1:]...)
			break
		}
	}
	hosts.mu.Unlock()
	return errors.Join(errs...)
}

// Stats returns a snapshot of the Host's counters.
func (h *Host) Stats() Stats {
	s := &h.st
	return Stats{
		DownstreamAccepted:      s.downAccepted.Load(),
		DownstreamOpen:          s.downOpen.Load(),
		DownstreamClosed:        s.downClosed.Load(),
		DownstreamFinalized:     s.downFinalized.Load(),
		DownstreamFilterless:    s.downFilterless.Load(),
		DownstreamUnfinalizable: s.downUnfinalizable.Load(),
		UpstreamConnects:        s.upConnects.Load(),
		UpstreamReady:           s.upReady.Load(),
		UpstreamFailures:        s.upFailures.Load(),
		UpstreamOverflows:       s.upOverflows.Load(),
		UpstreamRejected:        s.upRejected.Load(),
		UpstreamOpen:            s.upOpen.Load(),
		UpstreamClosed:          s.upClosed.Load(),
		UpstreamFinalized:       s.upFinalized.Load(),
		DroppedWrites:           s.droppedWrites.Load(),
		Panics:                  s.panics.Load(),
		ReadPauses:              s.readPauses.Load(),
		ReadPaused:              s.readPaused.Load(),
		WriteBuffered:           s.writeBuffered.Load(),
		WriteBufferedPeak:       s.writePeak.Load(),
		DirectWrites:            s.directWrites.Load(),
		WriterBatches:           s.writerBatches.Load(),
		EnvoyWouldAbort:         s.wouldAbort.Load(),
		StaleCalls:              staleCalls.Load(),
	}
}

func (h *Host) isClosed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed
}

// untrack ends a goroutine counted by AddListener or addEndpoint. A plain counter
// under h.mu rather than a WaitGroup: plugin goroutines may create upstream
// connections at any moment, and WaitGroup.Add may not race with Wait at zero.
func (h *Host) untrack() {
	h.mu.Lock()
	if h.active--; h.active < 0 {
		panic("host: untrack without track")
	}
	if h.active == 0 {
		h.idle.Broadcast()
	}
	h.mu.Unlock()
}

// addEndpoint records e as one of h's connections and tracks the goroutine that
// will run it (which must call untrack), unless h is closed. Both under one lock,
// so that Close either sees e (and shuts it down) or e never starts.
func (h *Host) addEndpoint(e *endpoint) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.endpoints[e] = struct{}{}
	h.active++
	return true
}

func (h *Host) removeEndpoint(e *endpoint) {
	h.mu.Lock()
	delete(h.endpoints, e)
	h.mu.Unlock()
}

// choice is an option of New that names one of its values: v, else the
// environment variable env, else the first value (the default). Another
// value panics: a typo in a benchmark's environment must not silently
// measure the default.
func choice(what, field, env, v string, values ...string) string {
	if v == "" {
		v = os.Getenv(env)
	}
	if v == "" {
		return values[0]
	}
	if !slices.Contains(values, v) {
		panic(fmt.Sprintf("host: %s %q (%s or $%s): want one of %q", what, v, field, env, values))
	}
	return v
}

// upstreamWorker returns the worker for a new upstream connection: with
// UpstreamWorkerCaller the worker running the calling goroutine, if it is
// one (a plugin's own goroutine may connect too); else pickWorker's.
func (h *Host) upstreamWorker() *worker {
	if h.opts.UpstreamWorker == UpstreamWorkerCaller {
		gid := goroutineID() // once per upstream connection, not per request
		h.mu.Lock()
		ws := h.workers
		h.mu.Unlock()
		for _, w := range ws {
			if w.isRunning(gid) {
				return w
			}
		}
	}
	return h.pickWorker()
}

// pickWorker returns the worker for a new connection, round-robin, starting
// the workers with the first; nil: the connection gets goroutines of its
// own (EventLoopGoroutines, or h is closed, or the workers could not start).
func (h *Host) pickWorker() *worker {
	if h.opts.EventLoop != EventLoopWorkers {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || h.noWorkers {
		return nil
	}
	if h.workers == nil {
		ws, err := startWorkers(h, h.opts.Workers)
		if err != nil {
			h.noWorkers = true
			h.log.Error("host: cannot start the event-loop workers; every connection gets goroutines of its own", "err", err)
			return nil
		}
		h.workers = ws
	}
	w := h.workers[h.nextWorker%uint32(len(h.workers))]
	h.nextWorker++
	return w
}

// acquireUpstream takes a circuit-breaker slot.
func (h *Host) acquireUpstream() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.upInUse >= h.opts.MaxUpstreamConnections {
		return false
	}
	h.upInUse++
	return true
}

func (h *Host) releaseUpstream() {
	h.mu.Lock()
	h.upInUse--
	h.mu.Unlock()
}

// hostFor picks the Host that owns an UpstreamConnect call. The shim passes the
// library ID of the most recent config in the process (one global), so with several
// Hosts alive the newest open Host with that ID wins. nil if none.
func hostFor(libraryID string) *Host {
	hosts.mu.Lock()
	defer hosts.mu.Unlock()
	var closed *Host
	for i := len(hosts.list) - 1; i >= 0; i-- {
		h := hosts.list[i]
		if h.opts.LibraryID != libraryID {
			continue
		}
		if !h.isClosed() {
			return h
		}
		if closed == nil {
			closed = h
		}
	}
	return closed
}

// orphans owns upstream connects that no Host claims: they fail with
// LocalConnectionFailure (Envoy: a library ID with no loaded library).
var orphans = sync.OnceValue(func() *Host {
	h := New(Options{LibraryID: "\x00orphans"})
	h.Close()
	return h
})
