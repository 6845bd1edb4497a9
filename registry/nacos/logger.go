package nacos

import (
	"fmt"
	"log/slog"
	"sync"

	"github.com/nacos-group/nacos-sdk-go/v2/common/logger"
)

// The SDK logs through one process-wide logger: its own (zap, into files)
// until replaced. setSDKLogger sends its lines to slog instead, the first
// Registry's logger winning (the SDK cannot tell registries apart anyway).
// Its info lines (every push, every request) go to debug.
var sdkLoggerOnce sync.Once

func setSDKLogger(log *slog.Logger) {
	sdkLoggerOnce.Do(func() { logger.SetLogger(sdkLogger{log.With("client", "nacos-sdk-go")}) })
}

type sdkLogger struct{ log *slog.Logger }

func (l sdkLogger) Info(args ...any)             { l.log.Debug(fmt.Sprint(args...)) }
func (l sdkLogger) Warn(args ...any)             { l.log.Warn(fmt.Sprint(args...)) }
func (l sdkLogger) Error(args ...any)            { l.log.Warn(fmt.Sprint(args...)) }
func (l sdkLogger) Debug(args ...any)            { l.log.Debug(fmt.Sprint(args...)) }
func (l sdkLogger) Infof(f string, args ...any)  { l.log.Debug(fmt.Sprintf(f, args...)) }
func (l sdkLogger) Warnf(f string, args ...any)  { l.log.Warn(fmt.Sprintf(f, args...)) }
func (l sdkLogger) Errorf(f string, args ...any) { l.log.Warn(fmt.Sprintf(f, args...)) }
func (l sdkLogger) Debugf(f string, args ...any) { l.log.Debug(fmt.Sprintf(f, args...)) }
