package bgp

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

func TestSnakeCase(t *testing.T) {
	for in, want := range map[string]string{
		"Topic":           "topic",
		"Key":             "key",
		"Err":             "err",
		"NeighborAddress": "neighbor_address",
		"RF":              "rf",
		"AdminStateUp":    "admin_state_up",
		"BGPMessage":      "bgp_message",
		"asn":             "asn",
		"Local4Byte":      "local4_byte",
	} {
		if got := snakeCase(in); got != want {
			t.Errorf("snakeCase(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestGoBGPLogger(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	g := newGoBGPLogger(l, nil)
	if g.GetLevel() != gobgplog.WarnLevel {
		t.Errorf("default level %v, want warn", g.GetLevel())
	}
	g.Info("dropped below warn", nil)
	g.Warn("cannot set TTL (255) for TCPListener", gobgplog.Fields{"Topic": "Peer", "Key": "10.255.0.1"})
	g.Warn("No matching path for withdraw found, may be path was not installed into table", nil)
	g.Warn("hold timer expired", gobgplog.Fields{"Topic": "Peer", "Key": "10.255.0.1", "State": "BGP_FSM_ESTABLISHED"})
	g.Error("boom", gobgplog.Fields{"Err": "x"})
	out := buf.String()
	for _, s := range []string{"dropped below warn", "cannot set TTL", "No matching path"} {
		if strings.Contains(out, s) {
			t.Errorf("%q must not be logged at warn level:\n%s", s, out)
		}
	}
	for _, s := range []string{
		`level=WARN msg="hold timer expired" component=gobgp key=10.255.0.1 state=BGP_FSM_ESTABLISHED topic=Peer`,
		`level=ERROR msg=boom component=gobgp err=x`,
	} {
		if !strings.Contains(out, s) {
			t.Errorf("missing %q in:\n%s", s, out)
		}
	}

	buf.Reset()
	g = newGoBGPLogger(l, slog.LevelDebug)
	g.Warn("cannot set TTL (255) for TCPListener", nil)
	if !strings.Contains(buf.String(), `level=DEBUG msg="cannot set TTL (255) for TCPListener"`) {
		t.Errorf("at debug the harmless warning shows as debug:\n%s", buf.String())
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Fatal must panic")
			}
		}()
		g.Fatal("logic bug", nil)
	}()
}
