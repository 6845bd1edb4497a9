package nacos

import (
	"fmt"
	"log/slog"

	"github.com/nacos-group/nacos-sdk-go/v2/common/logger"
)

// The SDK logs through one process-wide logger: its own (zap, into files
// under the client's LogDir) until replaced. Each NewNamingClient and
// NewConfigClient installs a new one of those, so setSDKLogger is called
// after them: it sends the SDK's lines to slog instead (a later client of
// the same process replaces it again: the SDK cannot tell clients apart
// anyway). Its info lines (every push, every request, a reconnection)
// go to debug.
func setSDKLogger(log *slog.Logger) {
	logger.SetLogger(sdkLogger{log.With("client", "nacos-sdk-go")})
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
