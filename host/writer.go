package host

import (
	"net"
	"sync"
)

// writeBuffer is the connection's write buffer: the loop appends, the writer
// goroutine drains. Unbounded, like Envoy's for the Go filter (its watermark
// callbacks are no-ops): bounding what is queued is the plugin's job.
type writeBuffer struct {
	mu      sync.Mutex
	queue   [][]byte
	end     bool // shut down the write side once queue is drained
	flush   bool // report taskFlushed once queue is drained
	endDone bool
	wake    chan struct{}
}

func (w *writeBuffer) push(data []byte, end bool) {
	w.mu.Lock()
	if len(data) > 0 {
		w.queue = append(w.queue, data)
	}
	if end {
		w.end = true
	}
	w.mu.Unlock()
	w.signal()
}

func (w *writeBuffer) requestFlush() {
	w.mu.Lock()
	w.flush = true
	w.mu.Unlock()
	w.signal()
}

func (w *writeBuffer) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (e *endpoint) writeLoop() {
	defer e.io.Done()
	w := &e.out
	for {
		select {
		case <-w.wake:
		case <-e.done:
			return
		}
		for {
			w.mu.Lock()
			q := w.queue
			w.queue = nil
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
			bufs := net.Buffers(q)
			if _, err := bufs.WriteTo(e.nc); err != nil {
				e.post(task{kind: taskWriteErr, err: err})
				return
			}
		}
	}
}
