package accesslog

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/breeze-mesh/breeze/filters/internal/fault"
	"github.com/breeze-mesh/breeze/filters/logs"
	"github.com/breeze-mesh/breeze/filters/metrics"
)

// DefaultQueueBytes bounds the lines of one sink waiting for its writer:
// about 4000 lines of the default format. Past it lines are dropped, and
// counted: a request never waits for the disk.
const DefaultQueueBytes = 1 << 20

// Streams are the paths that name the process's own streams.
const (
	Stdout = "/dev/stdout"
	Stderr = "/dev/stderr"
)

// drops are where one access log of one proxy counts the lines it lost.
type drops struct {
	queueFull, writeError prometheus.Counter
	// log is the proxy's, limited per reason: a flood of drops writes a
	// few lines that say why, the counters have every one.
	log *logs.Logger
}

func newDrops(proxy string, log *logs.Logger) *drops {
	return &drops{
		queueFull:  metrics.AccessLogDropped.WithLabelValues(proxy, "queue_full"),
		writeError: metrics.AccessLogDropped.WithLabelValues(proxy, "write_error"),
		log:        log,
	}
}

// queued is one line waiting: where it ends in the queue, and whose it is
// (to count it if it is lost).
type queued struct {
	end int
	d   *drops
}

// sink is one destination of access log lines, shared by every access log
// of the process that names its path: one file descriptor, one writer
// goroutine. Requests append their lines to a bounded queue (a copy into
// a preallocated buffer, under a lock held for nothing else) and go on;
// the writer swaps the queue for an empty one and writes it in one call.
// While the writer is stuck (a slow disk, a pipe nobody reads) the queue
// fills and further lines are dropped, never waited for.
type sink struct {
	path string

	mu     sync.Mutex // guards buf, lines, closed
	buf    []byte
	lines  []queued
	closed bool

	kick chan struct{} // a line was queued (capacity 1: never blocks)
	stop chan struct{}
	done chan struct{}

	// The writer's own, touched by run alone once it started.
	w          io.Writer
	file       *os.File // nil for a stream or an injected writer
	reopen     bool     // a file: reopen it when its path names another
	spare      []byte
	spareLines []queued
	log        *logs.Logger

	refs int // guarded by sinksMu
}

// newSink starts the writer of a sink that writes to w (a nil w with
// reopen: open path first).
func newSink(path string, w io.Writer, file *os.File, queueBytes int, log *slog.Logger) *sink {
	maxLines := max(queueBytes/64, 16)
	k := &sink{
		path:       path,
		buf:        make([]byte, 0, queueBytes),
		lines:      make([]queued, 0, maxLines),
		spare:      make([]byte, 0, queueBytes),
		spareLines: make([]queued, 0, maxLines),
		kick:       make(chan struct{}, 1),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
		w:          w,
		file:       file,
		reopen:     file != nil,
		log:        logs.New(log.With("access_log", path), logs.Options{}),
	}
	go k.run()
	return k
}

// enqueue queues a copy of line (which ends with a newline), or drops it
// when the queue is full. It never blocks on the writer.
func (k *sink) enqueue(line []byte, d *drops) {
	k.mu.Lock()
	if k.closed || len(k.buf)+len(line) > cap(k.buf) || len(k.lines) == cap(k.lines) {
		closed := k.closed
		k.mu.Unlock()
		if closed {
			d.writeError.Inc()
			return
		}
		d.queueFull.Inc()
		d.log.Warn("access_log_queue_full", "access log line dropped: the writer is behind (a slow disk, or a stream nobody reads)",
			"access_log", k.path, "reason", "queue_full")
		return
	}
	k.buf = append(k.buf, line...)
	k.lines = append(k.lines, queued{end: len(k.buf), d: d})
	k.mu.Unlock()
	select {
	case k.kick <- struct{}{}:
	default: // the writer has been told already
	}
}

func (k *sink) run() {
	defer close(k.done)
	for {
		select {
		case <-k.kick:
			k.flush()
		case <-k.stop:
			k.flush()
			if k.file != nil {
				k.file.Close()
			}
			return
		}
	}
}

var errNotOpen = errors.New("the file is not open")

// panicWhere names the writer in breeze_panics_total{where}.
const panicWhere = "access_log writer"

// flush writes what is queued, in one call. A panic there (a bug) must
// not take the process down: the lines of the batch are counted lost, and
// the writer goes on with the next.
func (k *sink) flush() {
	k.mu.Lock()
	k.buf, k.spare = k.spare[:0], k.buf
	k.lines, k.spareLines = k.spareLines[:0], k.lines
	k.mu.Unlock()
	if len(k.spare) == 0 {
		return
	}
	defer func() {
		if v := recover(); v != nil {
			metrics.Panics.WithLabelValues(panicWhere).Inc()
			for _, q := range k.spareLines {
				q.d.writeError.Inc()
			}
			clear(k.spareLines)
			k.log.Error("access_log_panic", "panic recovered writing the access log: its lines are dropped",
				"where", panicWhere, "panic", v, "stack", string(debug.Stack()))
		}
	}()
	fault.Point(panicWhere, k.path)
	if k.reopen {
		k.reopenIfMoved()
	}
	n, err := 0, errNotOpen
	if k.w != nil {
		n, err = k.w.Write(k.spare)
	}
	if err != nil {
		lost := 0
		for _, q := range k.spareLines {
			if q.end > n {
				q.d.writeError.Inc()
				lost++
			}
		}
		k.log.Error("access_log_write_error", "access log lines dropped: the write failed", "reason", "write_error", "err", err, "lines", lost)
	}
	clear(k.spareLines) // drop the drops pointers of lines gone
}

// reopenIfMoved opens the path anew when it no longer names the open
// file (logrotate renamed or removed it), or when the file could not be
// opened before. A file truncated in place (copytruncate) needs nothing:
// it is written with O_APPEND.
func (k *sink) reopenIfMoved() {
	if k.file != nil {
		cur, err := os.Stat(k.path)
		if err == nil {
			if open, err := k.file.Stat(); err == nil && os.SameFile(cur, open) {
				return
			}
		}
		k.file.Close()
		k.file, k.w = nil, nil
	}
	f, err := openFile(k.path)
	if err != nil {
		k.log.Error("access_log_reopen", "cannot reopen the access log: its lines are dropped until it can be", "reason", "write_error", "err", err)
		return
	}
	k.file, k.w = f, f
}

func openFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
}

// close writes what is queued and stops the writer.
func (k *sink) close() {
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return
	}
	k.closed = true
	k.mu.Unlock()
	close(k.stop)
	<-k.done
}

// The process's sinks by path: every proxy (listener, filter chain,
// config version) naming a path writes through one.
var (
	sinksMu sync.Mutex
	sinks   = map[string]*sink{}
)

// acquireSink returns the sink of path, opening it if no proxy has it
// open: the error of a file that cannot be opened rejects the config, as
// Envoy's does.
func acquireSink(path string, queueBytes int, log *slog.Logger) (*sink, error) {
	sinksMu.Lock()
	defer sinksMu.Unlock()
	if k, ok := sinks[path]; ok {
		k.refs++
		return k, nil
	}
	var k *sink
	switch path {
	case Stdout:
		k = newSink(path, os.Stdout, nil, queueBytes, log)
	case Stderr:
		k = newSink(path, os.Stderr, nil, queueBytes, log)
	default:
		f, err := openFile(path)
		if err != nil {
			return nil, err
		}
		k = newSink(path, f, f, queueBytes, log)
	}
	k.refs = 1
	sinks[path] = k
	return k, nil
}

// release gives the sink back; the last one out writes what is queued and
// closes it.
func (k *sink) release() {
	sinksMu.Lock()
	k.refs--
	last := k.refs == 0
	if last && sinks[k.path] == k {
		delete(sinks, k.path)
	}
	sinksMu.Unlock()
	if last {
		k.close()
	}
}
