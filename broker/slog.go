package broker

import (
	"context"
	"log/slog"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// slogHandler sends mochi's log/slog records to zap, so the process writes one log format.
type slogHandler struct {
	log    *zap.Logger
	fields []zap.Field
}

func newSlogHandler(log *zap.Logger) *slogHandler { return &slogHandler{log: log} }

func (h *slogHandler) Enabled(_ context.Context, l slog.Level) bool {
	return h.log.Core().Enabled(zapLevel(l))
}

// perMessage are mochi's records that it writes once per message on overload (a slow subscriber's
// full queue, exhausted packet IDs, a failed delivery: a QoS 1 overload run wrote 27,000 in 3 seconds). At warn level they would flood the log and
// slow the broker exactly when it is busiest; they are kept at debug, and the drops are counted in the
// metrics instead.
var perMessage = map[string]bool{
	"client store quota reached": true,
	"packet ids exhausted":       true,
	"failed publishing packet":   true,
}

func (h *slogHandler) Handle(_ context.Context, r slog.Record) error {
	level := zapLevel(r.Level)
	if perMessage[r.Message] {
		level = zapcore.DebugLevel
	}
	ce := h.log.Check(level, r.Message)
	if ce == nil {
		return nil
	}
	fields := append([]zap.Field(nil), h.fields...)
	r.Attrs(func(a slog.Attr) bool {
		fields = append(fields, zap.Any(a.Key, a.Value.Any()))
		return true
	})
	ce.Write(fields...)
	return nil
}

func (h *slogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := &slogHandler{log: h.log, fields: append([]zap.Field(nil), h.fields...)}
	for _, a := range attrs {
		n.fields = append(n.fields, zap.Any(a.Key, a.Value.Any()))
	}
	return n
}

func (h *slogHandler) WithGroup(name string) slog.Handler {
	return &slogHandler{log: h.log.Named(name), fields: h.fields}
}

// zapLevel maps slog levels onto zap's. mochi logs routine events at Info (server starting, clients
// taking over); they are demoted to Debug so ggbroker's own records are what an operator sees.
func zapLevel(l slog.Level) zapcore.Level {
	switch {
	case l >= slog.LevelError:
		return zapcore.ErrorLevel
	case l >= slog.LevelWarn:
		return zapcore.WarnLevel
	default:
		return zapcore.DebugLevel
	}
}
