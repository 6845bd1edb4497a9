package host

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
	"github.com/envoyproxy/envoy/contrib/golang/filters/network/source/go/pkg/network"
)

// An endpoint is one connection, downstream or upstream, with the pieces Envoy
// gives it: a dispatcher (the event loop that stands in for the worker thread
// that owns the connection), a read path and a write buffer.
//
// The callback logic (received, deliver, write, close, closeSocket, runTasks) is
// the same whichever driver does the I/O:
//   - the worker driver (worker_linux.go, wk != nil): a worker goroutine's epoll
//     loop reads the socket, makes the callbacks, runs the posted tasks and
//     writes, for many connections;
//   - the goroutine driver (w == nil): the loop goroutine (run) makes every
//     callback and owns the connection state; a reader goroutine reads the
//     socket and hands the bytes to the loop in pooled chunks, waiting in the
//     runtime poller holding no buffer while idle (reader.go); the loop writes
//     what a turn queued at the end of that turn, non-blocking (direct.go), and a
//     writer goroutine drains what the socket did not take (writer.go).
//
// In both, Envoy's writes are non-blocking and its write buffer unbounded for the
// Go filter; a downstream connection whose write buffer is above
// Options.WriteBufferLimit is not read meanwhile. Any goroutine may post writes
// and closes (the C API), which the loop runs in order after the current callback
// returns, like Dispatcher::post.
type endpoint struct {
	h        *Host
	upstream bool
	wrapper  unsafe.Pointer
	key      uint64 // uint64(uintptr(wrapper)): the key of the shim's filter maps
	connID   uint64 // upstream: the shim's connection id
	addr     string // upstream: the address as the plugin gave it

	mu    sync.Mutex
	tasks []task
	// spareTasks is the slice runTasks ran last, kept (loop goroutine
	// only) to take posts next turn: no allocation per turn.
	spareTasks []task
	gone       bool // the loop accepts no more tasks (socket closed)
	infoGone   bool // downstream: Envoy's C++ filter would be destroyed, Info returns ""
	finalized  bool
	localAddr  string
	remoteAddr string
	state      map[string]stateEntry // the connection's filter state

	// w is the worker that runs the connection's posted tasks (nil: the
	// connection has goroutines of its own); queued: the endpoint is on
	// w's ready list. Both under mu.
	w      *worker
	queued bool

	wake      chan struct{} // goroutine driver: tasks were posted
	halfClose atomic.Bool   // upstream only: set from any goroutine, read by the loop

	// Owned by the worker driving the connection (worker_linux.go), once it
	// has adopted it: wk is that worker (nil: the goroutine driver).
	wk         *worker
	listener   *listener // downstream: for the first callback
	fd         int
	slot       int32  // in wk.slots; -1: not registered with epoll
	gen        uint32 // the slot's generation, in each epoll event
	interest   uint32 // the epoll events registered
	outPending bool   // bytes wait in out for the socket (EPOLLOUT armed)
	started    bool   // the first callback was made
	finished   bool   // torn down

	// Owned by the goroutine making the callbacks (the loop goroutine, or
	// the worker).
	nc         net.Conn
	reads      chan readResult
	done       chan struct{} // closed when the socket is closed
	out        writeBuffer
	slices     sliceTable
	chunks     [][]byte       // onRead's, reused
	raw        *rawWriter     // nil: the socket cannot be written without blocking (TLS)
	io         sync.WaitGroup // reader and writer
	closed     bool           // the socket is closed (the close event follows at once)
	closing    bool           // Close(FlushWrite) waits for the write buffer to drain
	readEnded  bool           // upstream half-close: end of stream delivered
	writeEnded bool           // our end of stream reached the socket (shutdown(SHUT_WR))
	wroteEnd   bool           // a write with endStream was accepted; later writes drop
	hasFilter  bool           // the shim holds a filter for this wrapper
	readPaused bool           // downstream: write buffer above its high watermark, reads wait
	// unfinalizable: the filter is zero-size, so the shim's finalizer never runs.
	unfinalizable bool
	// loopGoroutine is the id of the goroutine making the callbacks (its
	// worker's or its loop goroutine; read for downstream only): the
	// host's worker thread of the connection (see getFilterState).
	loopGoroutine atomic.Uint64
}

type readResult struct {
	data []byte
	err  error
}

type taskKind uint8

const (
	taskWrite    taskKind = iota // a posted write
	taskClose                    // a posted close
	taskShutdown                 // Host.Close
	taskFlushed                  // the writer drained the buffer after a flush request
	taskWriteEnd                 // the writer shut down the write side
	taskWriteErr                 // the writer failed
	taskWriteLow                 // the writer drained the buffer to its low watermark
)

type task struct {
	kind      taskKind
	data      []byte
	end       bool
	closeType api.ConnectionCloseType
	err       error
}

// newEndpoint makes a connection whose posted tasks go to w, or, if w is
// nil, to goroutines of its own.
func newEndpoint(h *Host, upstream bool, w *worker) *endpoint {
	e := &endpoint{
		h:        h,
		upstream: upstream,
		wrapper:  newWrapper(),
		w:        w,
		fd:       -1,
		slot:     -1,
	}
	e.key = uint64(uintptr(e.wrapper))
	e.out.total, e.out.peak = &h.st.writeBuffered, &h.st.writePeak
	if !upstream && h.opts.WriteBufferLimit > 0 {
		e.out.high = h.opts.WriteBufferLimit
	}
	if w == nil {
		e.goroutineChannels()
	}
	registry.Store(e.wrapper, e)
	return e
}

// goroutineChannels makes what the goroutine driver needs (and a worker's
// connection does not: at 10,000 idle connections every byte counts).
func (e *endpoint) goroutineChannels() {
	e.wake = make(chan struct{}, 1)
	e.reads = make(chan readResult, readQueue)
	e.done = make(chan struct{})
	e.out.wake = make(chan struct{}, 1)
	e.out.startWriter = e.startWriter
}

// toGoroutines moves an upstream connection that its worker cannot drive
// (the dial gave no raw socket, e.g. TLS) to the goroutine driver, before
// its first callback; what was posted meanwhile waits for its loop.
func (e *endpoint) toGoroutines() {
	e.goroutineChannels()
	e.mu.Lock()
	e.w = nil
	e.queued = false
	e.mu.Unlock()
	e.wake <- struct{}{}
}

// table is the {ptr,len} table for the connection's callbacks: its
// worker's, or its own.
func (e *endpoint) table() *sliceTable {
	if e.wk != nil {
		return &e.wk.slices
	}
	return &e.slices
}

func (e *endpoint) side() string {
	if e.upstream {
		return "upstream"
	}
	return "downstream"
}

// post queues t for the loop. It returns false, dropping t, once the socket is
// closed: Envoy's posted closure finds closed_ set (or the filter gone) and returns.
func (e *endpoint) post(t task) bool {
	e.mu.Lock()
	if e.gone {
		e.mu.Unlock()
		return false
	}
	e.tasks = append(e.tasks, t)
	w := e.w
	schedule := w != nil && !e.queued
	if schedule {
		e.queued = true
	}
	e.mu.Unlock()
	if w != nil {
		if schedule {
			w.schedule(e)
		}
		return true
	}
	select {
	case e.wake <- struct{}{}:
	default:
	}
	return true
}

func (e *endpoint) postWrite(data []byte, end bool) {
	if !e.post(task{kind: taskWrite, data: data, end: end}) {
		e.dropWrite("connection has closed")
	}
}

func (e *endpoint) dropWrite(why string) {
	e.h.st.droppedWrites.Add(1)
	e.h.log.Debug("host: write dropped", "side", e.side(), "why", why, "wrapper", e.wrapper)
}

// invoke runs one shim callback. A panic in plugin code would abort Envoy; the
// host recovers, logs and counts it, and the caller closes this connection only.
func (e *endpoint) invoke(what string, fn func()) (ok bool) {
	defer func() {
		if r := recover(); r != nil {
			ok = false
			e.h.st.panics.Add(1)
			e.h.st.wouldAbort.Add(1)
			e.h.log.Error("host: plugin panicked in a callback; Envoy would abort the whole process. Closing this connection only.",
				"callback", what, "side", e.side(), "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	fn()
	return true
}

// start runs the reader and writer of a connected endpoint.
func (e *endpoint) start() {
	e.raw = newRawWriter(e.nc)
	// The writer goroutine starts when the socket does not take a write
	// at once (see writeBuffer.signal).
	e.io.Add(1)
	go e.readLoop()
}

// run is the event loop, after the first callback. It returns once the socket is
// closed and the close event delivered, then waits for the reader and writer.
func (e *endpoint) run() {
	for !e.closed {
		// What the last callback posted (its writes above all) runs before the
		// next read: the watermark must see a reply before more requests come in.
		select {
		case <-e.wake:
			e.runTasks()
			e.flushOut()
			continue
		default:
		}
		reads := e.reads
		if e.readPaused {
			// readDisable: what the reader already holds waits, and once its
			// queue is full it stops reading, so TCP holds the peer back.
			reads = nil
		}
		select {
		case <-e.wake:
			e.runTasks()
		case r := <-reads:
			e.onRead(r)
		}
		e.flushOut()
	}
}

// pauseReads follows the write buffer's watermarks on a downstream connection,
// as Envoy's HTTP/1 connection manager and TCP proxy do with readDisable: a
// client that does not read its replies is not read either. (Upstream
// connections are left alone: what fills their write buffer comes from other
// connections, which the host cannot tell.)
func (e *endpoint) pauseReads(pause bool) {
	if e.upstream || pause == e.readPaused {
		return
	}
	e.readPaused = pause
	if pause {
		e.h.st.readPauses.Add(1)
		e.h.st.readPaused.Add(1)
	} else {
		e.h.st.readPaused.Add(-1)
	}
}

func (e *endpoint) runTasks() {
	for !e.closed {
		e.mu.Lock()
		ts := e.tasks
		if len(ts) == 0 {
			e.mu.Unlock()
			return
		}
		e.tasks, e.spareTasks = e.spareTasks, nil
		e.queued = false // a post from now on schedules the endpoint again
		e.mu.Unlock()
		for i, t := range ts {
			if e.closed {
				for _, t := range ts[i:] {
					if t.kind == taskWrite {
						e.dropWrite("connection has closed")
					}
				}
				return
			}
			e.runTask(t)
		}
		clear(ts) // holds no write's bytes while spare
		e.spareTasks = ts[:0]
	}
}

func (e *endpoint) runTask(t task) {
	switch t.kind {
	case taskWrite:
		e.write(t.data, t.end)
	case taskClose:
		e.close(t.closeType)
	case taskShutdown:
		e.closeSocket(api.LocalClose)
	case taskFlushed:
		if e.closing {
			e.closeSocket(api.LocalClose)
		}
	case taskWriteEnd:
		e.writeEnded = true
		// Envoy: both sides half-closed, noticed on the write path, closes with
		// LocalClose.
		if e.readEnded {
			e.closeSocket(api.LocalClose)
		}
	case taskWriteErr:
		// Envoy: a failed write is PostIoAction::Close, closed as RemoteClose.
		e.h.log.Debug("host: write failed", "side", e.side(), "err", t.err)
		e.closeSocket(api.RemoteClose)
	case taskWriteLow:
		// The buffer may have gone above again since the writer posted this.
		e.pauseReads(e.out.isAbove())
	}
}

// write is Filter::write / UpstreamConn::write running on the dispatcher.
func (e *endpoint) write(data []byte, end bool) {
	if e.wroteEnd {
		// ConnectionImpl::write: more data after end_stream is an API violation;
		// it is dropped.
		e.dropWrite("write after end of stream")
		return
	}
	if !e.upstream {
		// The Go filter is also a write filter: Envoy runs the write through the
		// filter chain, i.e. the filter's OnWrite, before buffering it. StopIteration
		// there discards the data.
		var status uint64
		ok := e.invoke("OnWrite", func() {
			e.table().call([][]byte{data}, func(size, ptr uint64, n int) {
				status = onDownstreamWrite(e.wrapper, size, ptr, n, boolInt(end))
			})
		})
		if !ok {
			e.abort()
			return
		}
		if api.FilterStatus(status) == api.NetworkFilterStopIteration {
			return
		}
	}
	if end {
		e.wroteEnd = true
		if !e.halfClose.Load() {
			// Envoy ASSERTs !end_stream || half-close enabled; release builds
			// shut down the write side anyway, which is what happens here.
			e.h.log.Warn("host: write with endStream on a connection without half-close; Envoy debug builds assert here",
				"side", e.side())
		}
	}
	e.pauseReads(e.out.push(data, end))
}

// close is Filter::close / UpstreamConn::close running on the dispatcher.
func (e *endpoint) close(t api.ConnectionCloseType) {
	switch t {
	case api.FlushWrite, api.FlushWriteAndDelay:
		// Without a delayed_close_timeout (none on these connections)
		// FlushWriteAndDelay behaves as FlushWrite: flush, then LocalClose. Reads
		// stop meanwhile (ConnectionImpl::onRead returns while in delayed close).
		if !e.closing {
			e.closing = true
			e.out.requestFlush()
		}
	case api.AbortReset:
		if tc, ok := e.nc.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // close with RST
		}
		if e.wk != nil {
			resetOnClose(e.fd)
		}
		e.closeSocket(api.LocalClose)
	default: // NoFlush, Abort
		// Envoy's NoFlush makes one non-blocking attempt to write what is buffered;
		// the host drops it. Use FlushWrite when the bytes matter.
		e.closeSocket(api.LocalClose)
	}
}

// abort closes the connection after a recovered panic.
func (e *endpoint) abort() {
	if !e.closed {
		e.closeSocket(api.LocalClose)
	}
}

// closeSocket is ConnectionImpl::closeSocket: close the socket, drop what is
// buffered, raise the event.
func (e *endpoint) closeSocket(ev api.ConnectionEvent) {
	if e.closed {
		return
	}
	e.closed = true
	e.pauseReads(false) // nothing is read any more; keeps the ReadPaused gauge right
	e.mu.Lock()
	e.gone = true
	pending := e.tasks
	e.tasks = nil
	e.mu.Unlock()
	for _, t := range pending {
		if t.kind == taskWrite {
			e.dropWrite("connection has closed")
		}
	}
	if e.done != nil {
		close(e.done)
	}
	if e.nc != nil {
		_ = e.nc.Close()
	}
	if e.wk != nil {
		e.wk.closeFD(e)
	}
	if e.upstream {
		e.h.st.upClosed.Add(1)
	} else {
		e.h.st.downClosed.Add(1)
	}
	if !e.hasFilter {
		return
	}
	ok := e.invoke("OnEvent", func() {
		if e.upstream {
			onUpstreamEvent(e.wrapper, int(ev))
		} else {
			onDownstreamEvent(e.wrapper, int(ev))
		}
	})
	if !ok {
		// The shim deletes the filter from its map after OnEvent returns; a panic
		// skipped that, and the filter would never be finalized.
		if e.upstream {
			network.UpstreamFilters.DeleteFilterByWrapper(e.key)
		} else {
			network.DownstreamFilters.DeleteFilter(e.key)
		}
	}
	if !e.upstream {
		// Envoy deletes the closed connection and its filter right after the event;
		// later Info calls find the filter gone and return "".
		e.mu.Lock()
		e.infoGone = true
		e.mu.Unlock()
	}
}

// onRead handles what the reader goroutine delivered, coalescing whatever
// else is already queued into one multi-slice callback, as Envoy passes its
// whole read buffer.
func (e *endpoint) onRead(r readResult) {
	if e.closed {
		return
	}
	// chunks reuses the endpoint's slice: no allocation per read.
	chunks := e.chunks[:0]
	defer func() {
		for i, c := range chunks {
			readBufs.put(c)
			chunks[i] = nil
		}
		e.chunks = chunks[:0]
	}()
	for {
		if r.err != nil {
			break
		}
		chunks = append(chunks, r.data)
		// At most a queue's worth per OnData, as Envoy hands over at most about
		// its read buffer limit per read event.
		if len(e.reads) == 0 || len(chunks) == readQueue {
			r = readResult{}
			break
		}
		r = <-e.reads
	}
	e.received(chunks, r.err)
}

// received is a read event, whichever driver read it: chunks is what was
// read (one OnData), err what ended the reading (io.EOF at the end of the
// stream), if anything did.
func (e *endpoint) received(chunks [][]byte, err error) {
	eof := err != nil && errors.Is(err, io.EOF)
	half := e.upstream && e.halfClose.Load()
	if len(chunks) > 0 && !e.closing {
		end := eof && half
		if end {
			e.readEnded = true
		}
		if !e.deliver(chunks, end) {
			return
		}
	}
	if err == nil {
		return
	}
	if eof && half {
		// Half-close: the end of stream is data, the connection stays open for
		// writing until both sides are done.
		if !e.readEnded && !e.closing {
			e.readEnded = true
			if !e.deliver(nil, true) {
				return
			}
		}
		e.readEnded = true
		if e.writeEnded {
			e.closeSocket(api.RemoteClose)
		}
		return
	}
	// Without half-close Envoy turns the end of stream into a close; a reset or
	// read error also closes as RemoteClose.
	e.closeSocket(api.RemoteClose)
}

// deliver calls OnData. false if the plugin panicked (the connection is closed).
func (e *endpoint) deliver(chunks [][]byte, end bool) bool {
	ok := e.invoke("OnData", func() {
		e.table().call(chunks, func(size, ptr uint64, n int) {
			if e.upstream {
				onUpstreamData(e.wrapper, size, ptr, n, boolInt(end))
			} else {
				// The return value is ignored by Envoy for a terminal filter: it
				// drains the buffer whatever the status.
				_ = onDownstreamData(e.wrapper, size, ptr, n, boolInt(end))
			}
		})
	})
	if !ok {
		e.abort()
	}
	return ok
}

func (e *endpoint) readLoop() {
	defer e.io.Done()
	read := e.reader()
	for {
		data, err := read()
		if len(data) > 0 {
			// data is a pooled chunk of its own: the loop may keep several,
			// and gives each back once delivered (onRead).
			r := readResult{data: data}
			select {
			case e.reads <- r:
			case <-e.done:
				return
			}
		}
		if err != nil {
			select {
			case e.reads <- readResult{err: err}:
			case <-e.done:
			}
			return
		}
	}
}

// teardown runs on the loop goroutine (or the worker) after the socket is
// closed.
func (e *endpoint) teardown() {
	e.io.Wait()
	e.slices.free()
	// The endpoint stays registered until its wrapper is finalized, which may be
	// much later: let go of buffered bytes now.
	for len(e.reads) > 0 {
		readBufs.put((<-e.reads).data)
	}
	e.out.release()
	e.h.removeEndpoint(e)
	switch {
	case e.upstream:
		// Upstream wrappers always get a finalizer (on a separate object, set by
		// CreateUpstreamConn whatever happens to the connection).
	case !e.hasFilter:
		// The shim stored no filter and set no finalizer: nothing will ever call
		// DownstreamFinalize.
		e.retire()
		e.h.st.downFilterless.Add(1)
	case e.unfinalizable:
		e.retire()
		e.h.st.downUnfinalizable.Add(1)
	}
}

// finalize is DownstreamFinalize / UpstreamFinalize, called from the shim's
// finalizers on the runtime's finalizer goroutine.
func (e *endpoint) finalize() {
	e.mu.Lock()
	already := e.finalized
	e.finalized = true
	e.mu.Unlock()
	if already {
		staleCalls.Add(1)
		e.h.log.Error("host: wrapper finalized twice; in Envoy this is a double free", "side", e.side())
		return
	}
	e.retire()
	if e.upstream {
		e.h.st.upFinalized.Add(1)
	} else {
		e.h.st.downFinalized.Add(1)
	}
}

// retire forgets the wrapper: later calls with it are stale. The address itself is
// never reused (see newWrapper).
func (e *endpoint) retire() {
	registry.Delete(e.wrapper)
}

func (e *endpoint) info(infoType int) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.infoGone {
		return "" // CAPIFilterIsGone: the shim returns the zero string
	}
	switch api.ConnectionInfoType(infoType) {
	case api.ConnectionInfoLocalAddr:
		return e.localAddr
	case api.ConnectionInfoRemoteAddr:
		return e.remoteAddr
	}
	e.h.st.wouldAbort.Add(1)
	e.h.log.Error("host: Info with an unknown info type; Envoy panics (corrupt enum)", "type", infoType)
	return ""
}

func (e *endpoint) enableHalfClose(on bool) {
	e.mu.Lock()
	gone := e.gone
	e.mu.Unlock()
	if gone {
		e.h.log.Warn("host: EnableHalfClose on a closed connection", "side", e.side())
		return
	}
	e.halfClose.Store(on)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
