// Package accesslog writes a proxy's access logs (ProxyConfig.access_log):
// one line per request, however it ended, in Envoy's access log shape (a
// format string of command operators, or JSON lines), to a file or a
// standard stream, for the requests its filter chooses.
//
// The proxy puts a Filter in its chain when access_log is set (and none
// otherwise: no cost). It formats a request's line in OnDone, into a
// pooled buffer, and hands a copy to the sink's bounded queue; one writer
// goroutine per sink writes the queue out. A request never waits for a
// write: a full queue drops the line and counts it
// (breeze_access_log_dropped_total{proxy,reason}).
package accesslog

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/filters/filter"
	"github.com/breeze-mesh/breeze/filters/logs"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// FieldError is one mistake in an AccessLog config: Path is the field
// inside the AccessLog message (e.g. log_format.text_format).
type FieldError struct {
	Path, Value string
	Err         error
}

func (e *FieldError) Error() string {
	if e.Value == "" {
		return e.Path + ": " + e.Err.Error()
	}
	return e.Path + ": " + e.Value + ": " + e.Err.Error()
}

func (e *FieldError) Unwrap() error { return e.Err }

// Validate checks one access log's config: a path (absolute, or a
// standard stream), a format that parses, known response flags, a
// duration and a percentage in range. Errors are *FieldError, joined.
// Whether the file can be opened is known only where it is written: New
// says.
func Validate(c *breezev1.AccessLog) error {
	var errs []error
	add := func(path, value, format string, args ...any) {
		errs = append(errs, &FieldError{Path: path, Value: value, Err: fmt.Errorf(format, args...)})
	}
	switch p := c.GetPath(); {
	case p == "":
		add("path", `""`, "required: a file's absolute path, %s or %s", Stdout, Stderr)
	case strings.ContainsRune(p, 0):
		add("path", strconv.Quote(p), "must not contain a NUL byte")
	case !filepath.IsAbs(p):
		add("path", strconv.Quote(p), "must be absolute: the working directory of Envoy is nothing to rely on")
	case strings.HasSuffix(p, "/"):
		add("path", strconv.Quote(p), "names a directory: name the file")
	}
	lf := c.GetLogFormat()
	if lf.GetTextFormat() != "" && len(lf.GetJsonFormat()) > 0 {
		add("log_format", "", "set one of text_format and json_format, not both")
	}
	if t := lf.GetTextFormat(); t != "" {
		if _, err := parseFormat(t); err != nil {
			add("log_format.text_format", strconv.Quote(t), "%v", err)
		}
	}
	keys := slices.Sorted(maps.Keys(lf.GetJsonFormat()))
	for _, k := range keys {
		v := lf.GetJsonFormat()[k]
		if k == "" {
			add("log_format.json_format", `""`, "a key must not be empty")
			continue
		}
		if _, err := parseFormat(v); err != nil {
			add(fmt.Sprintf("log_format.json_format[%s]", k), strconv.Quote(v), "%v", err)
		}
	}
	fl := c.GetFilter()
	if d := fl.GetMinDuration(); d != nil {
		if err := d.CheckValid(); err != nil {
			add("filter.min_duration", fmt.Sprintf("{seconds: %d, nanos: %d}", d.GetSeconds(), d.GetNanos()), "invalid duration")
		} else if d.AsDuration() < 0 {
			add("filter.min_duration", d.AsDuration().String(), "must not be negative")
		}
	}
	for i, name := range fl.GetResponseFlagFilter().GetFlags() {
		if _, ok := flagByName(name); !ok {
			add(fmt.Sprintf("filter.response_flag_filter.flags[%d]", i), strconv.Quote(name), "not a response flag: want one of %s", strings.Join(flagNames, ", "))
		}
	}
	if fl != nil && fl.SamplePercentage != nil {
		if p := fl.GetSamplePercentage(); math.IsNaN(p) || p < 0 || p > 100 {
			add("filter.sample_percentage", strconv.FormatFloat(p, 'g', -1, 64), "must be 0–100")
		}
	}
	return errors.Join(errs...)
}

// Options say what an access log may know of its proxy.
type Options struct {
	// Proxy is the proxy's stat_prefix (the metrics' proxy label).
	Proxy string
	// Codec is the proxy's codec name (%PROTOCOL%; %SERVICE% and %METHOD%
	// are the keys its codecs.Describer names).
	Codec string
	// Log is the proxy's logger.
	Log *slog.Logger
	// QueueBytes bounds each sink's queue when this log opens it first; 0
	// means DefaultQueueBytes.
	QueueBytes int
	// Rand draws the samples (sample_percentage): a number in [0, n).
	// Nil: math/rand/v2. Tests inject theirs.
	Rand func(n uint64) uint64
}

// Filter is the access logs of one proxy. The proxy puts it first in its
// chain; any place would do: it acts in OnDone only, which every filter
// of the chain gets once per request, however the request ended.
type Filter struct {
	filter.Base
	logs      []*accessLog
	env       env
	rand      func(n uint64) uint64
	closeOnce sync.Once
}

// accessLog is one access_log entry.
type accessLog struct {
	sink  *sink
	text  format
	json  jsonFormat
	cond  condition
	drops *drops
}

// New opens the sinks of validated configs (a file that cannot be opened
// is an error naming its access_log index and path).
func New(cfgs []*breezev1.AccessLog, o Options) (*Filter, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.QueueBytes <= 0 {
		o.QueueBytes = DefaultQueueBytes
	}
	f := &Filter{env: env{protocol: o.Codec}, rand: o.Rand}
	if f.rand == nil {
		f.rand = rand.Uint64N
	}
	c := codecs.Instance(o.Codec)
	if d, ok := c.(codecs.Describer); ok {
		f.env.serviceKey, f.env.methodKey = d.RequestKeys()
	}
	f.env.replies, _ = c.(codecs.ReplyCoder)
	plog := logs.New(o.Log, logs.Options{})
	for i, cfg := range cfgs {
		l, err := build(cfg, o, plog)
		if err != nil {
			f.Close() // the sinks opened so far
			return nil, fmt.Errorf("access_log[%d].%w", i, err)
		}
		f.logs = append(f.logs, l)
	}
	return f, nil
}

func build(cfg *breezev1.AccessLog, o Options, plog *logs.Logger) (*accessLog, error) {
	l := &accessLog{drops: newDrops(o.Proxy, plog)}
	var err error
	lf := cfg.GetLogFormat()
	switch {
	case len(lf.GetJsonFormat()) > 0:
		if l.json, err = parseJSONFormat(lf.GetJsonFormat()); err != nil {
			return nil, &FieldError{Path: "log_format.json_format", Err: err}
		}
	case lf.GetTextFormat() != "":
		t := lf.GetTextFormat()
		if !strings.HasSuffix(t, "\n") {
			t += "\n"
		}
		if l.text, err = parseFormat(t); err != nil {
			return nil, &FieldError{Path: "log_format.text_format", Value: strconv.Quote(lf.GetTextFormat()), Err: err}
		}
	default:
		l.text, _ = parseFormat(DefaultFormat)
	}
	l.cond = newCondition(cfg.GetFilter())
	if l.sink, err = acquireSink(cfg.GetPath(), o.QueueBytes, o.Log); err != nil {
		return nil, &FieldError{Path: "path", Value: strconv.Quote(cfg.GetPath()), Err: err}
	}
	return l, nil
}

// Close gives the proxy's sinks back; the last user of a sink writes what
// it has queued and closes it.
// A line of a request that ends after (a connection outliving its
// proxy's config) is counted as dropped. Close is idempotent; nil-safe.
func (f *Filter) Close() {
	if f == nil {
		return
	}
	f.closeOnce.Do(func() {
		for _, l := range f.logs {
			l.sink.release()
		}
	})
}

// bufs are the buffers lines are formatted into: a line is copied into
// its sink's queue, so the buffer goes back at once.
var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// OnDone writes the request's line to each access log whose filter
// chooses it.
func (f *Filter) OnDone(s *filter.Stream) {
	for _, l := range f.logs {
		if !l.cond.pass(s, &f.env, f.rand) {
			continue
		}
		bp := bufs.Get().(*[]byte)
		b := l.appendLine((*bp)[:0], s, &f.env)
		l.sink.enqueue(b, l.drops)
		if cap(b) <= 64<<10 { // a huge line's buffer is not kept
			*bp = b
			bufs.Put(bp)
		}
	}
}

func (l *accessLog) appendLine(dst []byte, s *filter.Stream, e *env) []byte {
	if l.json != nil {
		return l.json.appendJSON(dst, s, e)
	}
	return l.text.appendText(dst, s, e)
}

// condition is a parsed AccessLogFilter.
type condition struct {
	errorsOnly  bool
	codes       []uint32
	minDuration time.Duration
	// flagFilter: only requests with one of flags (any flag when 0).
	flagFilter bool
	flags      filter.Flag
	// sample is the share logged, in millionths; sampleAll skips the draw.
	sampleAll bool
	sample    uint64
}

const million = 1_000_000

func newCondition(c *breezev1.AccessLogFilter) condition {
	cd := condition{
		errorsOnly:  c.GetErrorsOnly(),
		codes:       c.GetStatusCodes(),
		minDuration: c.GetMinDuration().AsDuration(),
		flagFilter:  c.GetResponseFlagFilter() != nil,
		sampleAll:   c == nil || c.SamplePercentage == nil || c.GetSamplePercentage() >= 100,
		sample:      uint64(math.Round(c.GetSamplePercentage() * million / 100)),
	}
	for _, n := range c.GetResponseFlagFilter().GetFlags() {
		fl, _ := flagByName(n)
		cd.flags |= fl
	}
	return cd
}

// pass reports whether the request is logged: every condition set holds,
// cheapest first, the random draw last.
func (c *condition) pass(s *filter.Stream, e *env, rnd func(uint64) uint64) bool {
	o := &s.Outcome
	if c.errorsOnly && (o.Responded && o.Status == codecs.StatusOK || o.Sent) && o.Flags == 0 {
		return false
	}
	if c.flagFilter && (o.Flags == 0 || c.flags != 0 && o.Flags&c.flags == 0) {
		return false
	}
	if c.minDuration > 0 && s.End.Sub(s.Start) < c.minDuration {
		return false
	}
	if len(c.codes) > 0 {
		code, ok := responseCode(s, e)
		if !ok || !slices.Contains(c.codes, code) {
			return false
		}
	}
	if c.sampleAll {
		return true
	}
	return c.sample > 0 && rnd(million) < c.sample
}
