//go:build linux

package host

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
)

// The worker driver (Options.EventLoop "workers"): Envoy's threading model.
// A few worker goroutines each run an epoll loop over the sockets of the
// connections assigned to them, round-robin, and make those connections'
// callbacks themselves, one at a time, like Envoy's worker threads
// (Event::DispatcherImpl over libevent). Per ready socket a worker reads,
// non-blocking, into its own scratch buffer (an idle connection holds no
// buffer and no goroutine), calls OnData, runs what the callback posted,
// and writes what the turn queued with one writev. What the socket refuses
// stays buffered, with EPOLLOUT armed until it drains.
//
// Posts from other goroutines (another worker's upstream callback writing
// to a downstream connection, the plugin's own goroutines, Host.Close) put
// the endpoint on its worker's ready list, and wake the worker if, and only
// if, it sleeps and nobody has woken it yet, as DispatcherImpl::post wakes
// its loop only when its post list was empty: a worker posting to its own
// connections does nothing more. How a worker sleeps and is woken: see
// wait.
//
// Sockets come from Go's net package, accepted by the listener or dialled
// with the Host's connect timeout, and are then duplicated
// (F_DUPFD_CLOEXEC) for the worker and the net.Conn closed: the duplicate
// shares the open file description, non-blocking already. That costs three
// system calls per connection, never per request, and keeps what the net
// package does well: any net.Listener the caller passes, accept back-off,
// dial timeouts and cancellation by Host.Close, exactly as with the
// goroutine driver.

// aLongTimeAgo is a read deadline in the past: it wakes a parked worker.
var aLongTimeAgo = time.Unix(1, 0)

type worker struct {
	h    *Host
	epfd int
	gid  atomic.Uint64 // the worker goroutine's id, once it runs
	done chan struct{}

	mu       sync.Mutex
	incoming []*endpoint // connections to adopt: their first callback
	ready    []*endpoint // connections with posted tasks
	sleeping bool        // parked in wait (or about to park)
	woken    bool        // a post woke it; the next need not
	stopping bool

	// Owned by the worker goroutine.
	spareIncoming, spareReady []*endpoint
	slots                     []*endpoint // epoll data -> endpoint
	free                      []int32     // free slots
	gen                       uint32
	events                    [128]unix.EpollEvent
	scratch                   []byte       // one read event's bytes
	readIov                   []unix.Iovec // scratch, in ReadSize chunks
	chunks                    [][]byte     // the chunks of one read
	writeIov                  [maxDirectIovecs]unix.Iovec
	slices                    sliceTable // the {ptr,len} table of every callback

	// Parking: the epoll fd, non-blocking, in Go's own poller, and the
	// one function RawConn.Read runs (see wait).
	epf     *os.File
	epoll   syscall.RawConn
	pollFD  func(uintptr) bool
	n       int
	waitErr error
	slept   bool
}

// startWorkers starts n workers for h.
// isRunning reports whether the calling goroutine is w's.
func (w *worker) isRunning(gid uint64) bool { return w.gid.Load() == gid }

func startWorkers(h *Host, n int) ([]*worker, error) {
	ws := make([]*worker, 0, n)
	for range n {
		w, err := newWorker(h)
		if err != nil {
			for _, w := range ws {
				w.stop()
			}
			return nil, err
		}
		ws = append(ws, w)
		go w.loop()
	}
	return ws, nil
}

func newWorker(h *Host) (*worker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, err
	}
	// Non-blocking, the epoll fd goes into Go's poller (see wait).
	epf := os.NewFile(uintptr(epfd), "epoll")
	epoll, err := epf.SyscallConn()
	if err == nil {
		// Fails (os.ErrNoDeadline) if Go's poller did not take the fd:
		// then nothing could wake a parked worker.
		err = epf.SetReadDeadline(time.Time{})
	}
	if err != nil {
		_ = epf.Close()
		return nil, err
	}
	// At most readQueue chunks of ReadSize per read event, as the
	// goroutine driver's reader queues at most that many for one OnData
	// (about Envoy's read limit per event).
	size := h.opts.ReadSize
	w := &worker{h: h, epfd: epfd, done: make(chan struct{}),
		scratch: make([]byte, size*readQueue), readIov: make([]unix.Iovec, readQueue),
		epf: epf, epoll: epoll}
	w.pollFD = w.poll
	for i := range w.readIov {
		w.readIov[i].Base = &w.scratch[i*size]
		w.readIov[i].SetLen(size)
	}
	return w, nil
}

// adopt hands a connected endpoint to w, which makes its first callback.
func (w *worker) adopt(e *endpoint) {
	e.wk = w
	w.put(&w.incoming, e)
}

// schedule puts e, which has posted tasks, on w's ready list.
func (w *worker) schedule(e *endpoint) { w.put(&w.ready, e) }

// put appends e to one of w's lists and wakes w if it must.
func (w *worker) put(list *[]*endpoint, e *endpoint) {
	w.mu.Lock()
	*list = append(*list, e)
	wake := w.wakeLocked()
	w.mu.Unlock()
	if wake {
		w.wake()
	}
}

// wakeLocked reports whether the caller must wake the worker: only when it
// sleeps and nobody has woken it yet.
func (w *worker) wakeLocked() bool {
	if !w.sleeping || w.woken || w.stopping {
		return false
	}
	w.woken = true
	return true
}

// wake makes the parked worker's wait return (see there).
func (w *worker) wake() {
	_ = w.epf.SetReadDeadline(aLongTimeAgo)
}

// stop ends the worker once it has no connection left (Host.Close).
func (w *worker) stop() {
	w.mu.Lock()
	w.stopping = true
	w.woken = true
	w.mu.Unlock()
	w.wake()
	<-w.done
}

func (w *worker) loop() {
	defer func() {
		_ = w.epf.Close()
		w.slices.free()
		close(w.done)
	}()
	w.gid.Store(goroutineID())
	for {
		w.mu.Lock()
		if w.stopping {
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		w.turn(w.wait())
	}
}

// wait returns the number of ready events in w.events, parking the worker
// until there is one or something is posted.
//
// The worker parks in Go's own poller, which watches the epoll fd
// (readable when an event of its set is ready), through RawConn.Read:
// parked, it holds no thread, and its wake-up is a goroutine's, not a
// thread's return from a blocking epoll_wait that must then win a P back
// from the scheduler (measured dearer on a busy machine: 27.5-31.7
// against 22.2-28.0 µs of CPU per request in BenchmarkProxyDubbo, four
// alternating runs).
//
// A post wakes a parked worker by setting the epoll file's read deadline
// in the past, which makes the pending RawConn.Read return: no system
// call, where Envoy's DispatcherImpl::post writes an eventfd. An eventfd
// in the epoll set did the same here for a write on the waker's side and
// the kernel's and Go's pollers between the two goroutines, measured
// about 15% dearer per request (20.6-23.1 against 17.2-20.0 µs, four
// alternating runs). Unlike a socket read through RawConn.Read (which
// clears the poller's readiness first), no wake-up is empty: a woken
// worker always has a post or an event.
func (w *worker) wait() int {
	w.n, w.waitErr = 0, nil
	err := w.epoll.Read(w.pollFD)
	if w.slept {
		w.slept = false
		w.mu.Lock()
		w.sleeping = false
		w.woken = false
		w.mu.Unlock()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// A post woke it (maybe late: a waker that lost the race with an
		// event sets the deadline after this wake-up, and the next wait
		// returns at once, for one empty turn).
		_ = w.epf.SetReadDeadline(time.Time{})
		err = nil
	}
	if err == nil {
		err = w.waitErr
	}
	if err != nil {
		// Only a bad epoll fd fails here: a bug, and not recoverable.
		panic("host: epoll_wait: " + err.Error())
	}
	return w.n
}

// poll is wait's RawConn.Read function: true when there is something to
// do, false to park until the epoll fd is readable.
func (w *worker) poll(uintptr) bool {
	for {
		n, err := unix.EpollWait(w.epfd, w.events[:], 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			w.waitErr = err
			return true
		}
		if n > 0 {
			w.n = n
			return true
		}
		break
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopping || len(w.incoming) > 0 || len(w.ready) > 0 {
		return true
	}
	// From here a post wakes the worker.
	w.sleeping = true
	w.slept = true
	return false
}

// turn handles n ready events, then the connections adopted and posted to
// meanwhile.
func (w *worker) turn(n int) {
	for i := range n {
		ev := w.events[i]
		e := w.slots[ev.Fd]
		if e == nil || e.gen != uint32(ev.Pad) {
			continue // closed earlier in this turn
		}
		w.handle(e, ev.Events)
	}
	w.mu.Lock()
	incoming := w.incoming
	w.incoming, w.spareIncoming = w.spareIncoming, nil
	w.mu.Unlock()
	for _, e := range incoming {
		w.open(e)
	}
	clear(incoming)
	w.spareIncoming = incoming[:0]

	w.mu.Lock()
	ready := w.ready
	w.ready, w.spareReady = w.spareReady, nil
	w.mu.Unlock()
	for _, e := range ready {
		// Not started: still connecting (its first callback will run
		// what was posted), or moved to goroutines (toGoroutines).
		if e.started && !e.finished {
			w.endTurn(e)
		}
	}
	clear(ready)
	w.spareReady = ready[:0]
}

// open makes e's first callback and registers its socket.
func (w *worker) open(e *endpoint) {
	e.started = true
	e.loopGoroutine.Store(w.gid.Load())
	var ok bool
	if e.upstream {
		ok = e.openUpstream()
	} else {
		ok = e.openDownstream(e.listener)
		e.listener = nil
	}
	if ok {
		w.register(e)
	}
	w.endTurn(e)
}

func (w *worker) register(e *endpoint) {
	if k := len(w.free); k > 0 {
		e.slot = w.free[k-1]
		w.free = w.free[:k-1]
	} else {
		e.slot = int32(len(w.slots))
		w.slots = append(w.slots, nil)
	}
	w.slots[e.slot] = e
	w.gen++
	e.gen = w.gen
	e.interest = e.wantEvents()
	ev := unix.EpollEvent{Events: e.interest, Fd: e.slot, Pad: int32(e.gen)}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, e.fd, &ev); err != nil {
		w.h.log.Error("host: epoll_ctl ADD failed; closing the connection", "side", e.side(), "err", err)
		e.closeSocket(api.LocalClose)
	}
}

// closeFD is the socket's close for closeSocket.
func (w *worker) closeFD(e *endpoint) {
	if e.slot >= 0 {
		// Explicitly: the descriptor may not be the file's last (a fork).
		_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, e.fd, nil)
		w.slots[e.slot] = nil
		w.free = append(w.free, e.slot)
		e.slot = -1
	}
	closeFD(e.fd)
	e.fd = -1
	e.outPending = false
}

// wantEvents is what the connection waits for: readable unless its reads
// are paused (watermark) or its read side has ended (half-close),
// writable while the socket has refused bytes.
func (e *endpoint) wantEvents() uint32 {
	var ev uint32
	if !e.readPaused && !e.readEnded {
		ev |= unix.EPOLLIN
	}
	if e.outPending {
		ev |= unix.EPOLLOUT
	}
	return ev
}

// handle is one epoll event of e.
func (w *worker) handle(e *endpoint, events uint32) {
	failed := events&(unix.EPOLLERR|unix.EPOLLHUP) != 0
	if e.outPending && (events&unix.EPOLLOUT != 0 || failed) {
		w.flush(e)
	}
	if !e.closed && (events&unix.EPOLLIN != 0 || failed) {
		if e.interest&unix.EPOLLIN != 0 {
			w.read(e)
		} else if failed {
			// Not reading (paused, or half-closed), and the socket is
			// reset: level-triggered, the event would come back at once.
			e.closeSocket(api.RemoteClose)
		}
	}
	w.endTurn(e)
}

// endTurn runs what was posted to e, writes what the turn queued and
// brings the epoll registration up to date, or tears e down once closed.
func (w *worker) endTurn(e *endpoint) {
	e.runTasks()
	w.flush(e)
	if e.closed {
		if !e.finished {
			w.finish(e)
		}
		return
	}
	if want := e.wantEvents(); want != e.interest && e.slot >= 0 {
		ev := unix.EpollEvent{Events: want, Fd: e.slot, Pad: int32(e.gen)}
		if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_MOD, e.fd, &ev); err != nil {
			w.h.log.Error("host: epoll_ctl MOD failed; closing the connection", "side", e.side(), "err", err)
			e.closeSocket(api.LocalClose)
			w.finish(e)
			return
		}
		e.interest = want
	}
}

// finish is the end of a connection the worker drove: what the goroutine
// driver's defers do when its loop returns.
func (w *worker) finish(e *endpoint) {
	e.finished = true
	e.teardown()
	h := e.h
	if e.upstream {
		h.st.upOpen.Add(-1)
		h.releaseUpstream()
	} else {
		h.st.downOpen.Add(-1)
	}
	h.untrack()
}

// read is one read event: at most readQueue chunks of ReadSize in one
// readv, delivered in one OnData. The chunks are the worker's scratch
// buffer: the shim copies them at once, as it does Envoy's buffer.
func (w *worker) read(e *endpoint) {
	var n int
	var errno syscall.Errno
	for {
		r, _, en := unix.Syscall(unix.SYS_READV, uintptr(e.fd), uintptr(unsafe.Pointer(&w.readIov[0])), uintptr(len(w.readIov)))
		n, errno = int(r), en
		if errno != unix.EINTR {
			break
		}
	}
	var err error
	switch {
	case errno == unix.EAGAIN:
		return
	case errno != 0:
		err = errno
		n = 0
	case n == 0:
		err = io.EOF
	}
	size := e.h.opts.ReadSize
	chunks := w.chunks[:0]
	for off := 0; off < n; off += size {
		chunks = append(chunks, w.scratch[off:min(off+size, n)])
	}
	e.received(chunks, err)
	clear(chunks)
	w.chunks = chunks[:0]
}

// flush writes what e's write buffer holds, one writev per at most
// maxDirectIovecs buffers, until the buffer is empty or the socket takes
// no more. A write that carries bytes the socket refused before is
// counted as a writer batch (the goroutine driver's writer goroutine
// writes those), the others as direct writes. Once the buffer is empty it
// shuts the write side down after an end of stream, and closes after
// Close(FlushWrite).
func (w *worker) flush(e *endpoint) {
	if e.closed {
		return
	}
	later := e.outPending
	b := &e.out
	b.mu.Lock()
	var failed syscall.Errno
	below := false
	for len(b.queue) > 0 {
		k := min(len(b.queue), len(w.writeIov))
		want := 0
		for i, buf := range b.queue[:k] {
			w.writeIov[i].Base = &buf[0]
			w.writeIov[i].SetLen(len(buf))
			want += len(buf)
		}
		var n int
		var errno syscall.Errno
		for {
			r, _, en := unix.Syscall(unix.SYS_WRITEV, uintptr(e.fd), uintptr(unsafe.Pointer(&w.writeIov[0])), uintptr(k))
			n, errno = int(r), en
			if errno != unix.EINTR {
				break
			}
		}
		clear(w.writeIov[:k]) // hold no buffer
		if errno == unix.EAGAIN {
			break
		}
		if errno != 0 {
			failed = errno
			break
		}
		if later {
			w.h.st.writerBatches.Add(1)
		} else {
			w.h.st.directWrites.Add(1)
		}
		m := copy(b.queue, b.queue[takeSent(b.queue, n):])
		clear(b.queue[m:])
		b.queue = b.queue[:m]
		if b.sentLocked(n) {
			below = true
		}
		if n < want {
			break // the socket is full
		}
	}
	pending := len(b.queue) > 0
	shut := !pending && b.end && !b.endDone
	if shut {
		b.endDone = true
	}
	flushed := !pending && b.flush
	if flushed {
		b.flush = false
	}
	b.mu.Unlock()

	if failed != 0 {
		// Envoy: a failed write is PostIoAction::Close, closed as RemoteClose.
		w.h.log.Debug("host: write failed", "side", e.side(), "err", failed)
		e.closeSocket(api.RemoteClose)
		return
	}
	e.outPending = pending
	if below {
		e.pauseReads(false)
	}
	if shut {
		if err := unix.Shutdown(e.fd, unix.SHUT_WR); err != nil {
			w.h.log.Debug("host: write failed", "side", e.side(), "err", err)
			e.closeSocket(api.RemoteClose)
			return
		}
		e.writeEnded = true
		// Envoy: both sides half-closed, noticed on the write path, closes
		// with LocalClose.
		if e.readEnded {
			e.closeSocket(api.LocalClose)
			return
		}
	}
	if flushed && e.closing {
		e.closeSocket(api.LocalClose)
	}
}

// takeFD returns a duplicate of nc's socket for a worker to drive, or -1
// if nc is no plain TCP socket (TLS: the goroutine driver reads it).
func takeFD(nc net.Conn) int {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return -1
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return -1
	}
	fd := -1
	var dupErr error
	if err := rc.Control(func(s uintptr) {
		fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil || dupErr != nil {
		return -1
	}
	return fd
}

func closeFD(fd int) {
	if fd >= 0 {
		_ = unix.Close(fd)
	}
}

// resetOnClose makes the coming close send RST (AbortReset): SO_LINGER 0.
func resetOnClose(fd int) {
	_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
}
