package envoylog

import (
	"errors"
	"log/slog"
	"sync"
	"testing"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
)

type line struct {
	level api.LogType
	msg   string
}

// fakeEnvoy records lines and has a log level, as Envoy's golang logger.
type fakeEnvoy struct {
	mu    sync.Mutex
	level api.LogType
	lines []line
}

func (f *fakeEnvoy) Log(l api.LogType, msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lines = append(f.lines, line{l, msg})
}

func (f *fakeEnvoy) Level() api.LogType {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.level
}

func (f *fakeEnvoy) take() []line {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.lines
	f.lines = nil
	return l
}

func TestLines(t *testing.T) {
	envoy := &fakeEnvoy{level: api.Trace}
	log := slog.New(New(envoy))
	log.Info("breeze plugin loaded", "version", "v0.4.0", "istio", "1.28")
	log.With("proxy", "demo").WithGroup("upstream").Warn("closing upstream connection: bad frame", "endpoint", "10.0.0.1:20880", "err", errors.New("bad magic\n0xdead"))
	log.Debug("proxy asleep: no connection left")
	log.Error("breeze config rejected; its connections will be refused", "err", `routes[0]: cluster "x" unknown`)
	log.Log(nil, slog.LevelDebug-1, "finer than debug")
	want := []line{
		{api.Info, "breeze plugin loaded version=v0.4.0 istio=1.28"},
		{api.Warn, `closing upstream connection: bad frame proxy=demo upstream.endpoint=10.0.0.1:20880 upstream.err="bad magic\n0xdead"`},
		{api.Debug, "proxy asleep: no connection left"},
		{api.Error, `breeze config rejected; its connections will be refused err="routes[0]: cluster \"x\" unknown"`},
		{api.Trace, "finer than debug"},
	}
	got := envoy.take()
	if len(got) != len(want) {
		t.Fatalf("got %d lines, want %d: %v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d:\ngot  %v %q\nwant %v %q", i, got[i].level, got[i].msg, want[i].level, want[i].msg)
		}
	}
}

// Envoy's level decides, when it changes too (its admin /logging).
func TestEnvoysLevelDecides(t *testing.T) {
	envoy := &fakeEnvoy{level: api.Warn}
	log := slog.New(New(envoy))
	log.Debug("d")
	log.Info("i")
	log.Warn("w")
	log.Error("e")
	if got := envoy.take(); len(got) != 2 || got[0].msg != "w" || got[1].msg != "e" {
		t.Errorf("at warn: got %v, want w and e", got)
	}
	envoy.mu.Lock()
	envoy.level = api.Debug
	envoy.mu.Unlock()
	log.Debug("d")
	if got := envoy.take(); len(got) != 1 || got[0].msg != "d" {
		t.Errorf("at debug: got %v, want d", got)
	}
	envoy.mu.Lock()
	envoy.level = api.LogType(6) // spdlog's off
	envoy.mu.Unlock()
	log.Error("e")
	if got := envoy.take(); len(got) != 0 {
		t.Errorf("off: got %v", got)
	}
}

func TestLevel(t *testing.T) {
	for _, tc := range []struct {
		in   slog.Level
		want api.LogType
	}{
		{slog.LevelDebug - 4, api.Trace},
		{slog.LevelDebug, api.Debug},
		{slog.LevelInfo - 1, api.Debug},
		{slog.LevelInfo, api.Info},
		{slog.LevelWarn, api.Warn},
		{slog.LevelError, api.Error},
		{slog.LevelError + 4, api.Error},
	} {
		if got := Level(tc.in); got != tc.want {
			t.Errorf("Level(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
