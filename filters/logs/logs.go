// Package logs limits the log lines that peers can trigger. A client that
// opens 300 connections of garbage, or an upstream that refuses every
// connect, must not write 300 lines: per key (a reason from a fixed set),
// the first Burst lines are written, then at most one per Interval, which
// says how many lines of its key were suppressed since the one before. A
// key quiet for a whole Interval gets its burst back.
//
// The log is a sample; the metrics counting the same events stay exact.
// Lines suppressed after a key's last written line are reported only by
// its next one: the counters have them at once.
package logs

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"time"
)

// Defaults: an incident shows its first lines in full, then about six
// lines a minute per reason.
const (
	DefaultBurst    = 10
	DefaultInterval = 10 * time.Second
)

// maxKeys bounds the budgets kept; keys come from fixed sets, so it is
// only reached by a caller's mistake, and then those keys share one budget.
const maxKeys = 1024

// Options configure a Logger; zero values take the defaults.
type Options struct {
	Burst    int
	Interval time.Duration
	// Now is the clock deciding budgets (time.Now by default); tests
	// inject theirs. Records keep the wall-clock time.
	Now func() time.Time
}

// Logger writes through an slog.Logger, limited per key. Safe for
// concurrent use.
type Logger struct {
	log      *slog.Logger
	burst    int
	interval time.Duration
	now      func() time.Time

	mu   sync.Mutex
	keys map[string]*budget
}

type budget struct {
	last       time.Time // when the last line was written
	written    int       // lines written since the key was last quiet
	suppressed int       // lines dropped since the last one written
}

// New limits lines written to log.
func New(log *slog.Logger, o Options) *Logger {
	if log == nil {
		log = slog.Default()
	}
	if o.Burst <= 0 {
		o.Burst = DefaultBurst
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Logger{log: log, burst: o.Burst, interval: o.Interval, now: o.Now}
}

// Info, Warn and Error write msg with its key/value args, unless key is
// over its budget. A line after suppressed ones gets "suppressed"=count.
// (Debug lines go to slog directly, unlimited: an operator who turns them
// on asked for every one.)
func (l *Logger) Info(key, msg string, args ...any)  { l.write(slog.LevelInfo, key, msg, args) }
func (l *Logger) Warn(key, msg string, args ...any)  { l.write(slog.LevelWarn, key, msg, args) }
func (l *Logger) Error(key, msg string, args ...any) { l.write(slog.LevelError, key, msg, args) }

// write must be called directly by the exported methods: it reports their
// caller as the line's source.
func (l *Logger) write(level slog.Level, key, msg string, args []any) {
	ctx := context.Background()
	// A level that is off costs neither the lock nor a budget.
	if !l.log.Enabled(ctx, level) {
		return
	}
	ok, suppressed := l.allow(key)
	if !ok {
		return
	}
	var pcs [1]uintptr
	runtime.Callers(3, pcs[:]) // runtime.Callers, write, Info/Warn/...
	r := slog.NewRecord(time.Now(), level, msg, pcs[0])
	r.Add(args...)
	if suppressed > 0 {
		r.Add("suppressed", suppressed)
	}
	_ = l.log.Handler().Handle(ctx, r)
}

// allow decides whether a line of key is written now, and how many of its
// lines were suppressed since the last written.
func (l *Logger) allow(key string) (bool, int) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.keys[key]
	if b == nil {
		b = l.add(key, now)
	}
	since := now.Sub(b.last)
	if b.written >= l.burst && since < l.interval {
		b.suppressed++
		return false, 0
	}
	if since >= l.interval && b.suppressed == 0 {
		b.written = 0 // nothing since the last line, an interval ago: quiet
	}
	b.written++
	b.last = now
	n := b.suppressed
	b.suppressed = 0
	return true, n
}

func (l *Logger) add(key string, now time.Time) *budget {
	if l.keys == nil {
		l.keys = map[string]*budget{}
	}
	if len(l.keys) >= maxKeys {
		// A quiet budget is as good as a new one: forget those.
		for k, b := range l.keys {
			if b.suppressed == 0 && now.Sub(b.last) >= l.interval {
				delete(l.keys, k)
			}
		}
		if len(l.keys) >= maxKeys {
			key = "" // too many keys: the rest share one budget
			if b := l.keys[key]; b != nil {
				return b
			}
		}
	}
	b := &budget{}
	l.keys[key] = b
	return b
}
