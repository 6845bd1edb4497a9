package host

import (
	"syscall"
	"unsafe"
)

// Direct writes. Envoy writes a connection's buffer from its own worker
// thread, in the same loop turn that filled it. The host's loop does the
// same where it can: at the end of a turn, what the turn queued goes to
// the socket in one non-blocking writev, and the writer goroutine is woken
// only for what the socket would not take at once (a peer slow to read),
// for the end of stream and for flushes. A goroutine hand-off per write is
// work Envoy does not do, and it would be charged to the plugin in every
// measurement made on the host.

// maxDirectIovecs bounds one direct writev; a longer queue goes through
// the writer goroutine.
const maxDirectIovecs = 16

// rawWriter is a socket the loop can write without blocking.
type rawWriter struct {
	rc     syscall.RawConn
	iovecs [maxDirectIovecs]syscall.Iovec
	// The attempt's arguments and results, and the one closure made for
	// the connection's life that RawConn.Write runs (a closure per write
	// would be an allocation per write).
	n       int
	wrote   uintptr
	errno   syscall.Errno
	writeFD func(fd uintptr) bool
}

func newRawWriter(nc any) *rawWriter {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	rw := &rawWriter{rc: rc}
	rw.writeFD = func(fd uintptr) bool {
		for {
			rw.wrote, _, rw.errno = syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&rw.iovecs[0])), uintptr(rw.n))
			if rw.errno != syscall.EINTR {
				break
			}
		}
		// true: one attempt, never wait for the socket to become writable.
		return true
	}
	return rw
}

// writev makes one writev attempt of bufs (at most maxDirectIovecs) and
// returns how many bytes the socket took; EAGAIN is not an error (0 bytes).
func (rw *rawWriter) writev(bufs [][]byte) (int, error) {
	n := 0
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		rw.iovecs[n].Base = &b[0]
		rw.iovecs[n].SetLen(len(b))
		n++
	}
	if n == 0 {
		return 0, nil
	}
	rw.n, rw.wrote, rw.errno = n, 0, 0
	err := rw.rc.Write(rw.writeFD)
	clear(rw.iovecs[:n]) // hold no buffer
	switch {
	case err != nil:
		return 0, err
	case rw.errno == syscall.EAGAIN:
		return 0, nil
	case rw.errno != 0:
		return 0, rw.errno
	}
	return int(rw.wrote), nil
}

// flushOut runs on the loop goroutine at the end of each turn.
func (e *endpoint) flushOut() {
	if e.closed {
		return
	}
	w := &e.out
	w.mu.Lock()
	if len(w.queue) == 0 || w.busy || e.raw == nil || len(w.queue) > maxDirectIovecs {
		pending := len(w.queue) > 0 || (w.end && !w.endDone) || w.flush
		w.mu.Unlock()
		if pending {
			w.signal()
		}
		return
	}
	q := w.queue
	w.queue, w.spare = w.spare, nil
	w.busy = true
	w.mu.Unlock()

	n, err := e.raw.writev(q)
	e.h.st.directWrites.Add(1)
	if err != nil {
		w.mu.Lock()
		w.busy = false
		w.mu.Unlock()
		e.post(task{kind: taskWriteErr, err: err})
		return
	}
	// The buffers written whole go back to the pool; the rest, the first
	// one cut where the socket stopped, are queued again ahead of anything
	// else for the writer goroutine.
	rest := q[takeSent(q, n):]
	w.mu.Lock()
	w.busy = false
	if len(rest) > 0 {
		// Only the loop queues writes, and it is here: the queue is empty.
		w.queue = append(w.queue, rest...)
	}
	pending := len(w.queue) > 0 || (w.end && !w.endDone) || w.flush
	w.mu.Unlock()
	clear(q)
	if w.written(n, q[:0]) {
		e.pauseReads(w.isAbove())
	}
	if pending {
		w.signal()
	}
}
