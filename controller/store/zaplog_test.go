package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

// TestZapLogger: etcd's warnings reach the slog handler with snake_case
// keys and component=etcd; its info chatter does not.
func TestZapLogger(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	z := ZapLogger(log, slog.LevelWarn).Named("etcdserver").With(zap.String("local-member-id", "8e9e05c52164694d"))

	z.Info("saved snapshot", zap.Uint64("snapshot-index", 10001))
	z.Debug("applied entries")
	if buf.Len() != 0 {
		t.Fatalf("info and debug passed on: %s", buf.String())
	}
	z.Warn("slow fdatasync", zap.Duration("took", 1500*time.Millisecond), zap.Duration("expected-duration", time.Second),
		zap.Error(errors.New("disk busy")), zap.Strings("remote.peers", []string{"a", "b"}))
	z.Error("failed to publish", zap.Int64("term", 3))

	var got []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		got = append(got, m)
	}
	if len(got) != 2 {
		t.Fatalf("%d records, want 2: %s", len(got), buf.String())
	}
	w := got[0]
	for k, want := range map[string]any{"level": "WARN", "msg": "slow fdatasync", "component": "etcd", "logger": "etcdserver",
		"local_member_id": "8e9e05c52164694d", "took": 1.5e9, "expected_duration": 1e9 /* slog JSON: durations in ns */, "error": "disk busy"} {
		if w[k] != want {
			t.Errorf("warning %s = %v, want %v (record %v)", k, w[k], want, w)
		}
	}
	if peers, _ := w["remote_peers"].([]any); len(peers) != 2 {
		t.Errorf("remote_peers = %v, want [a b]", w["remote_peers"])
	}
	if got[1]["level"] != "ERROR" || got[1]["term"] != float64(3) {
		t.Errorf("error record %v", got[1])
	}
	// A handler above warn gets no warnings either.
	buf.Reset()
	quiet := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelError}))
	ZapLogger(quiet, slog.LevelWarn).Warn("slow fdatasync")
	if buf.Len() != 0 {
		t.Errorf("a warning passed a handler set to error: %s", buf.String())
	}
	ZapLogger(nil, slog.LevelWarn).Warn("discarded") // nil: no panic
}
