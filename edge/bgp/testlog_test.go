package bgp

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// testLogger sends log lines to t.Log while the test runs and drops them
// afterwards (GoBGP goroutines may still log after a test returned).
func testLogger(t *testing.T) *slog.Logger {
	h := &tHandler{t: t, mu: &sync.Mutex{}, done: &atomic.Bool{}}
	t.Cleanup(func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.done.Store(true)
	})
	return slog.New(h)
}

type tHandler struct {
	t     *testing.T
	mu    *sync.Mutex
	done  *atomic.Bool
	attrs []slog.Attr
}

func (h *tHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h *tHandler) Handle(_ context.Context, r slog.Record) error {
	if h.done.Load() {
		return nil
	}
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	for _, a := range h.attrs {
		b.WriteString(" " + a.String())
	}
	r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.done.Load() {
		h.t.Log(b.String())
	}
	return nil
}
func (h *tHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &c
}
func (h *tHandler) WithGroup(string) slog.Handler { return h }
