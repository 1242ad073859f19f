package network

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/gologshim"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// go-libp2p logs through log/slog, via a handler it resolves once per
// subsystem at the first log line, process-wide. New installs slogToZap as
// that handler (before the first libp2p host exists) and points it at the
// Logger of the most recent Host that has one. Records below warn are
// dropped: at debug, libp2p and fx flood the log.
var (
	libp2pLogger  atomic.Pointer[zap.Logger]
	installLogger sync.Once
)

// routeLibp2pLogs sends go-libp2p's logs to log (when not nil).
func routeLibp2pLogs(log *zap.Logger) {
	installLogger.Do(func() { gologshim.SetDefaultHandler(slogToZap{}) })
	if log != nil {
		libp2pLogger.Store(log.Named("libp2p"))
	}
}

// slogToZap is a slog.Handler writing warn-and-above records to libp2pLogger.
type slogToZap struct {
	fields []zap.Field
	prefix string // group names, each followed by a dot
}

func (h slogToZap) Enabled(_ context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && libp2pLogger.Load() != nil
}

func (h slogToZap) Handle(_ context.Context, r slog.Record) error {
	log := libp2pLogger.Load()
	if log == nil || r.Level < slog.LevelWarn {
		return nil
	}
	lvl := zapcore.WarnLevel
	if r.Level >= slog.LevelError {
		lvl = zapcore.ErrorLevel
	}
	ce := log.Check(lvl, r.Message)
	if ce == nil {
		return nil
	}
	fields := append(make([]zap.Field, 0, len(h.fields)+r.NumAttrs()), h.fields...)
	r.Attrs(func(a slog.Attr) bool {
		fields = appendAttr(fields, h.prefix, a)
		return true
	})
	ce.Write(fields...)
	return nil
}

func (h slogToZap) WithAttrs(attrs []slog.Attr) slog.Handler {
	fields := append(make([]zap.Field, 0, len(h.fields)+len(attrs)), h.fields...)
	for _, a := range attrs {
		fields = appendAttr(fields, h.prefix, a)
	}
	return slogToZap{fields: fields, prefix: h.prefix}
}

func (h slogToZap) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return slogToZap{fields: h.fields, prefix: h.prefix + name + "."}
}

// appendAttr flattens a (possibly grouped) slog attribute into zap fields.
func appendAttr(fields []zap.Field, prefix string, a slog.Attr) []zap.Field {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		if a.Key != "" {
			prefix += a.Key + "."
		}
		for _, g := range v.Group() {
			fields = appendAttr(fields, prefix, g)
		}
		return fields
	}
	if a.Key == "" {
		return fields
	}
	return append(fields, zap.Any(prefix+a.Key, v.Any()))
}
