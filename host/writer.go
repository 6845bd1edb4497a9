package host

import (
	"net"
	"sync"
	"sync/atomic"
)

// writeBuffer is the connection's write buffer: the loop appends, the writer
// goroutine drains. Like Envoy's, it accepts whatever is written; its
// watermarks (Envoy's WatermarkBuffer: above when longer than high, below again
// at half of it) tell the loop when to stop and resume reading the connection.
type writeBuffer struct {
	mu    sync.Mutex
	queue [][]byte
	// spare is the queue the writer drained last, taken back as the next
	// queue (swapped under mu): no allocation per batch. bufs is the
	// writer goroutine's own net.Buffers, a field so that writev's
	// pointer to it does not move it to the heap each time.
	spare [][]byte
	bufs  net.Buffers
	// sent: the writer's list of the buffers of one batch, which go back
	// to writeBufs once on the socket (WriteTo forgets them as it goes).
	sent [][]byte
	// busy: a batch taken from queue is being written (by the writer
	// goroutine or the loop's direct write, see direct.go): the other
	// waits, so that bytes reach the socket in order.
	busy bool
	// running: a writer goroutine is alive (see signal); startWriter
	// starts one.
	running     bool
	startWriter func()
	end         bool // shut down the write side once queue is drained
	flush       bool // report taskFlushed once queue is drained
	endDone     bool
	wake        chan struct{}

	// size counts the bytes queued and those the writer is writing now: both
	// are memory a client that does not read holds.
	size  int
	high  int // 0: no watermarks
	above bool
	total *atomic.Int64 // the Host's WriteBuffered
	peak  *atomic.Int64 // and its peak
}

// push queues data and reports whether the buffer is above its high watermark.
func (w *writeBuffer) push(data []byte, end bool) (above bool) {
	w.mu.Lock()
	if len(data) > 0 {
		w.queue = append(w.queue, data)
		w.size += len(data)
		t := w.total.Add(int64(len(data)))
		for p := w.peak.Load(); t > p && !w.peak.CompareAndSwap(p, t); p = w.peak.Load() {
		}
	}
	if end {
		w.end = true
	}
	if w.high > 0 && w.size > w.high {
		w.above = true
	}
	above = w.above
	w.mu.Unlock()
	// No signal: the loop writes at the end of its turn (flushOut) and
	// wakes the writer goroutine only for what the socket did not take.
	return above
}

// written accounts for n bytes on the socket and takes back the drained
// queue as the spare; true when that took the buffer from above its high
// watermark to its low one.
func (w *writeBuffer) written(n int, drained [][]byte) (below bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.spare = drained
	w.busy = false
	return w.sentLocked(n)
}

// sentLocked accounts for n bytes on the socket, with mu held; true when
// that took the buffer from above its high watermark to its low one.
func (w *writeBuffer) sentLocked(n int) (below bool) {
	w.size -= n
	w.total.Add(-int64(n))
	if w.above && w.size <= w.high/2 {
		w.above = false
		return true
	}
	return false
}

// takeSent gives back to the pool the buffers of q that the n bytes a
// write took cover whole, cuts the first of the rest where the write
// stopped, and returns how many were written whole: q[done:] is left.
func takeSent(q [][]byte, n int) (done int) {
	for done < len(q) && n >= len(q[done]) {
		n -= len(q[done])
		writeBufs.put(q[done])
		q[done] = nil
		done++
	}
	if done < len(q) {
		q[done] = q[done][n:]
	}
	return done
}

func (w *writeBuffer) isAbove() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.above
}

// release drops whatever is still buffered (the socket is closed).
func (w *writeBuffer) release() {
	w.mu.Lock()
	w.queue = nil
	w.total.Add(-int64(w.size))
	w.size = 0
	w.mu.Unlock()
}

// requestFlush asks for taskFlushed (goroutine driver) or a close (worker)
// once the buffer is drained; the driver's end-of-turn write sees it.
func (w *writeBuffer) requestFlush() {
	w.mu.Lock()
	w.flush = true
	w.mu.Unlock()
}

// signal hands work to the writer goroutine, starting one if none runs:
// the writer exits when it has nothing left, so that an idle connection
// (most of them, at 10,000) costs no goroutine for writing. Called on the
// loop goroutine only (its flushOut), which also waits for the
// writer in teardown.
func (w *writeBuffer) signal() {
	w.mu.Lock()
	if !w.running {
		w.running = true
		w.mu.Unlock()
		w.startWriter()
		return
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// idle reports, and records, that the writer goroutine exits: nothing is
// queued for it (or the loop is writing it), no flush or end of stream is
// pending. Under mu, so that a signal either finds it running (and its
// wake is seen) or finds it gone (and starts another).
func (w *writeBuffer) idle() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if (len(w.queue) == 0 || w.busy) && !w.flush && !(w.end && !w.endDone) {
		w.running = false
		return true
	}
	return false
}

// stopped records that the writer goroutine exits on an error or a close.
func (w *writeBuffer) stopped() {
	w.mu.Lock()
	w.running = false
	w.mu.Unlock()
}

func (e *endpoint) startWriter() {
	e.io.Add(1)
	go e.writeLoop()
}

func (e *endpoint) writeLoop() {
	defer e.io.Done()
	w := &e.out
	for first := true; ; first = false {
		if !first {
			if w.idle() {
				return
			}
			select {
			case <-w.wake:
			case <-e.done:
				w.stopped()
				return
			}
		}
		for {
			w.mu.Lock()
			if w.busy {
				// The loop is writing directly; it wakes us if it leaves
				// anything.
				w.mu.Unlock()
				break
			}
			q := w.queue
			if len(q) > 0 {
				w.queue, w.spare = w.spare, nil
				w.busy = true
			}
			if len(q) == 0 {
				shut := w.end && !w.endDone
				if shut {
					w.endDone = true
				}
				flushed := w.flush
				w.flush = false
				w.mu.Unlock()
				if shut {
					if cw, ok := e.nc.(interface{ CloseWrite() error }); ok {
						if err := cw.CloseWrite(); err != nil {
							w.stopped()
							e.post(task{kind: taskWriteErr, err: err})
							return
						}
					}
					e.post(task{kind: taskWriteEnd})
				}
				if flushed {
					e.post(task{kind: taskFlushed})
				}
				break
			}
			w.mu.Unlock()
			n := 0
			for _, b := range q {
				n += len(b)
			}
			e.h.st.writerBatches.Add(1)
			w.sent = append(w.sent[:0], q...)
			w.bufs = net.Buffers(q)
			_, err := w.bufs.WriteTo(e.nc)
			w.bufs = nil
			if err != nil {
				w.stopped()
				e.post(task{kind: taskWriteErr, err: err})
				return
			}
			for _, b := range w.sent {
				writeBufs.put(b)
			}
			clear(w.sent)
			clear(q) // WriteTo let go of what it wrote; this of the rest
			if w.written(n, q[:0]) {
				e.post(task{kind: taskWriteLow})
			}
		}
	}
}
