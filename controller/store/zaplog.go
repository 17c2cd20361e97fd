package store

import (
	"context"
	"log/slog"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// ZapLogger returns a zap logger, for etcd's server and client, that
// writes to log the entries at min and above. etcd logs at info level all
// the time (every compaction, snapshot, lease revoke); at warn and above
// it says what an operator must see (slow applies and fsyncs, a lost
// leader, a failed request), which the controller used to discard.
//
// Entries carry component=etcd; zap field keys ("took", "local-member-id",
// "expected-duration") are turned into the controller's snake_case. A nil
// log discards.
func ZapLogger(log *slog.Logger, min slog.Level) *zap.Logger {
	if log == nil {
		return zap.NewNop()
	}
	return zap.New(&slogCore{h: log.Handler(), min: min})
}

// slogCore is a zapcore.Core writing to a slog.Handler.
type slogCore struct {
	h     slog.Handler
	min   slog.Level
	attrs []slog.Attr // from With
}

var _ zapcore.Core = (*slogCore)(nil)

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	}
	return slog.LevelError // error, dpanic, panic, fatal
}

func (c *slogCore) Enabled(l zapcore.Level) bool {
	sl := slogLevel(l)
	return sl >= c.min && c.h.Enabled(context.Background(), sl)
}

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{h: c.h, min: c.min, attrs: append(append([]slog.Attr(nil), c.attrs...), attrsOf(fields)...)}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	r := slog.NewRecord(e.Time, slogLevel(e.Level), e.Message, 0)
	r.AddAttrs(slog.String("component", "etcd"))
	if e.LoggerName != "" {
		r.AddAttrs(slog.String("logger", e.LoggerName))
	}
	r.AddAttrs(c.attrs...)
	r.AddAttrs(attrsOf(fields)...)
	return c.h.Handle(context.Background(), r)
}

func (c *slogCore) Sync() error { return nil }

// attrsOf encodes zap fields with zap's own map encoder (which knows every
// field type) and turns them into slog attributes.
func attrsOf(fields []zapcore.Field) []slog.Attr {
	if len(fields) == 0 {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	out := make([]slog.Attr, 0, len(enc.Fields))
	for _, f := range fields { // in the fields' order; the map has none
		k := f.Key
		if v, ok := enc.Fields[k]; ok {
			out = append(out, slog.Any(snake(k), v))
			delete(enc.Fields, k)
		}
	}
	return out
}

// snake turns "local-member-id" or "remote.peer" into local_member_id.
func snake(k string) string {
	return strings.Map(func(r rune) rune {
		if r == '-' || r == '.' || r == ' ' {
			return '_'
		}
		return r
	}, k)
}
