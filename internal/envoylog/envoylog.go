// Package envoylog is an slog.Handler that writes to Envoy's log, so that
// the plugin's lines appear among Envoy's own, at Envoy's levels, and are
// filtered as Envoy filters those of its Go extensions: by the level of its
// "golang" logger (-l, or --component-log-level golang:debug).
//
// A line is the message followed by the attributes as key=value pairs;
// Envoy adds the time, the thread and the level:
//
//	[2026-03-01 12:00:00.000][17][info][golang] [contrib/golang/common/log/cgo.cc:27] breeze plugin loaded version=v0.4.0 ...
package envoylog

import (
	"bytes"
	"context"
	"log/slog"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
)

// Sink is Envoy's log: in the plugin, Envoy's Go API (api.LogInfo and its
// siblings, api.GetLogLevel).
type Sink interface {
	Log(level api.LogType, msg string)
	// Level is the least severe level Envoy writes now; it changes at
	// run time (Envoy's admin /logging).
	Level() api.LogType
}

// Handler writes records to a Sink.
type Handler struct {
	sink Sink
	with []groupOrAttrs // WithGroup and WithAttrs calls, in order
}

type groupOrAttrs struct {
	group string
	attrs []slog.Attr
}

// New writes to sink.
func New(sink Sink) *Handler { return &Handler{sink: sink} }

// Level maps an slog level to Envoy's: below debug is trace; errors and
// anything more severe are error (Envoy's critical is its own).
func Level(l slog.Level) api.LogType {
	switch {
	case l < slog.LevelDebug:
		return api.Trace
	case l < slog.LevelInfo:
		return api.Debug
	case l < slog.LevelWarn:
		return api.Info
	case l < slog.LevelError:
		return api.Warn
	default:
		return api.Error
	}
}

func (h *Handler) Enabled(_ context.Context, l slog.Level) bool {
	return Level(l) >= h.sink.Level()
}

// Handle formats the attributes as slog's text handler does, without the
// time and level Envoy writes itself.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	var buf bytes.Buffer
	buf.WriteString(r.Message)
	buf.WriteByte(' ')
	var th slog.Handler = slog.NewTextHandler(&buf, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey || a.Key == slog.MessageKey) {
				return slog.Attr{}
			}
			return a
		},
	})
	// Log lines are few (those peers can trigger are sampled), so
	// replaying the handler's groups and attributes on each is cheap.
	for _, w := range h.with {
		if w.group != "" {
			th = th.WithGroup(w.group)
		} else {
			th = th.WithAttrs(w.attrs)
		}
	}
	if err := th.Handle(ctx, r); err != nil {
		return err
	}
	h.sink.Log(Level(r.Level), string(bytes.TrimRight(buf.Bytes(), " \n")))
	return nil
}

func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	return h.add(groupOrAttrs{attrs: attrs})
}

func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return h.add(groupOrAttrs{group: name})
}

func (h *Handler) add(w groupOrAttrs) *Handler {
	return &Handler{sink: h.sink, with: append(h.with[:len(h.with):len(h.with)], w)}
}
