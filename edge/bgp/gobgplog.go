package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"unicode"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// gobgpLogger adapts GoBGP's log.Logger to slog. Lines carry
// component=gobgp and GoBGP's fields with their keys in snake_case
// ("Topic" -> "topic", "NeighborAddress" -> "neighbor_address"; the
// values are GoBGP's).
//
// Levels: lines below min are dropped before any formatting; GoBGP asks
// GetLevel before building its costly debug lines, so GetLevel reports
// the matching GoBGP level. Panic and Fatal mark GoBGP logic bugs: they
// log at error and panic (logrus would os.Exit on Fatal; a panic keeps
// the stack and lets the process supervisor restart the agent either way).
//
// Demoted to debug because they are harmless and measured in the kernel
// lab (shared/notes/kernel-lab.md):
//   - "cannot set TTL (255) for TCPListener": GoBGP tries GTSM-style TTL
//     on its listener and some sockets refuse; sessions are unaffected;
//   - "No matching path for withdraw found...": a peer withdrew a path we
//     never accepted (for example one our import policy rejected).
type gobgpLogger struct {
	log   *slog.Logger
	level atomic.Uint32 // a gobgplog.LogLevel
}

var demoted = []string{
	"cannot set TTL (255) for TCPListener",
	"No matching path for withdraw",
}

func newGoBGPLogger(l *slog.Logger, min slog.Leveler) *gobgpLogger {
	if min == nil {
		min = slog.LevelWarn
	}
	g := &gobgpLogger{log: l.With("component", "gobgp")}
	g.level.Store(uint32(toGoBGPLevel(min.Level())))
	return g
}

func toGoBGPLevel(l slog.Level) gobgplog.LogLevel {
	switch {
	case l <= slog.LevelDebug:
		return gobgplog.DebugLevel
	case l <= slog.LevelInfo:
		return gobgplog.InfoLevel
	case l <= slog.LevelWarn:
		return gobgplog.WarnLevel
	default:
		return gobgplog.ErrorLevel
	}
}

func (g *gobgpLogger) emit(level gobgplog.LogLevel, msg string, fields gobgplog.Fields) {
	if level == gobgplog.WarnLevel && slices.ContainsFunc(demoted, func(p string) bool { return strings.HasPrefix(msg, p) }) {
		level = gobgplog.DebugLevel
	}
	if level > g.GetLevel() {
		return
	}
	var sl slog.Level
	switch level {
	case gobgplog.DebugLevel, gobgplog.TraceLevel:
		sl = slog.LevelDebug
	case gobgplog.InfoLevel:
		sl = slog.LevelInfo
	case gobgplog.WarnLevel:
		sl = slog.LevelWarn
	default:
		sl = slog.LevelError
	}
	attrs := make([]slog.Attr, 0, len(fields))
	for k, v := range fields {
		if k == gobgplog.FieldFacility {
			k = "facility"
		}
		attrs = append(attrs, slog.Any(snakeCase(k), v))
	}
	slices.SortFunc(attrs, func(a, b slog.Attr) int { return strings.Compare(a.Key, b.Key) })
	g.log.LogAttrs(context.Background(), sl, msg, attrs...)
}

func (g *gobgpLogger) Panic(msg string, f gobgplog.Fields) {
	g.emit(gobgplog.ErrorLevel, msg, f)
	panic(fmt.Sprintf("gobgp: %s %v", msg, f))
}

func (g *gobgpLogger) Fatal(msg string, f gobgplog.Fields) {
	g.emit(gobgplog.ErrorLevel, msg, f)
	panic(fmt.Sprintf("gobgp: %s %v", msg, f))
}

func (g *gobgpLogger) Error(msg string, f gobgplog.Fields) { g.emit(gobgplog.ErrorLevel, msg, f) }
func (g *gobgpLogger) Warn(msg string, f gobgplog.Fields)  { g.emit(gobgplog.WarnLevel, msg, f) }
func (g *gobgpLogger) Info(msg string, f gobgplog.Fields)  { g.emit(gobgplog.InfoLevel, msg, f) }
func (g *gobgpLogger) Debug(msg string, f gobgplog.Fields) { g.emit(gobgplog.DebugLevel, msg, f) }

func (g *gobgpLogger) SetLevel(l gobgplog.LogLevel) { g.level.Store(uint32(l)) }
func (g *gobgpLogger) GetLevel() gobgplog.LogLevel  { return gobgplog.LogLevel(g.level.Load()) }

var _ gobgplog.Logger = (*gobgpLogger)(nil)

// snakeCase turns GoBGP's field names (CamelCase, sometimes with
// acronyms: "NeighborAddress", "Err", "RF") into snake_case.
func snakeCase(s string) string {
	var b strings.Builder
	rs := []rune(s)
	for i, r := range rs {
		if unicode.IsUpper(r) {
			prevLower := i > 0 && (unicode.IsLower(rs[i-1]) || unicode.IsDigit(rs[i-1]))
			nextLower := i > 0 && i+1 < len(rs) && unicode.IsUpper(rs[i-1]) && unicode.IsLower(rs[i+1])
			if prevLower || nextLower {
				b.WriteByte('_')
			}
			b.WriteRune(unicode.ToLower(r))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
