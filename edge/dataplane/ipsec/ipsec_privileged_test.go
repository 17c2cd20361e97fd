package ipsec

// Privileged test against a real charon (Debian strongswan-charon 5.9.8),
// started by the Charon supervisor in a fresh network namespace on the
// host. IKE itself cannot complete here (no peer, and the host kernel has
// no ESP): the VM lab covers negotiation. What this proves is the VICI
// side for real: load, list, unload, idempotence, restart recovery.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshwan/meshwan/edge/backoff"
	"github.com/meshwan/meshwan/edge/dataplane/netnstest"
	"github.com/strongswan/govici/vici"
	"github.com/vishvananda/netlink"
)

// recordingSession logs the commands sent through it.
type recordingSession struct {
	Session
	mu    *sync.Mutex
	calls *[]string
}

func (r recordingSession) Call(ctx context.Context, cmd string, in *vici.Message) (*vici.Message, error) {
	r.mu.Lock()
	*r.calls = append(*r.calls, cmd)
	r.mu.Unlock()
	return r.Session.Call(ctx, cmd, in)
}

// startCharon runs a supervised charon in a fresh namespace; stop cancels
// it and returns Run's result (it may be called more than once).
func startCharon(t *testing.T) (ch *Charon, stop func() error) {
	t.Helper()
	netnstest.RequireRoot(t)
	if _, err := os.Stat(DefaultCharon); err != nil {
		t.Skipf("no charon at %s (install strongswan-charon): %v", DefaultCharon, err)
	}
	ns := netnstest.New(t)
	// An underlay for charon to send from: a bridge with the local address
	// and a default route to an absent gateway, so IKE packets leave and
	// go unanswered (the IKE_SA stays CONNECTING) instead of failing.
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.NewLinkAttrs()}
	br.Name = "wan0"
	if err := h.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	a, _ := netlink.ParseAddr("192.0.2.1/24")
	if err := h.AddrAdd(br, a); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: br.Index, Gw: net.ParseIP("192.0.2.254")}); err != nil {
		t.Fatal(err)
	}

	ch, err = NewCharon(CharonConfig{RunDir: t.TempDir(), NetNS: netnstest.Path(ns), Restart: backoff.Policy{Min: 100 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ch.Run(ctx) }()
	stop = sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() { _ = stop() })
	rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
	defer rcancel()
	if err := ch.WaitReady(rctx); err != nil {
		out, _ := os.ReadFile(ch.cfg.RunDir + "/" + outName)
		t.Fatalf("%v\ncharon output:\n%s", err, out)
	}
	return ch, stop
}

func listNames(t *testing.T, s Session) (conns, secrets, sas []string) {
	t.Helper()
	ctx := context.Background()
	cm, err := s.Stream(ctx, "list-conns", "list-conn", nil)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := parseConns(cm)
	if err != nil {
		t.Fatal(err)
	}
	conns = sortedKeys(cs)
	sh, err := s.Call(ctx, "get-shared", nil)
	if err != nil {
		t.Fatal(err)
	}
	var keys sharedKeys
	if err := vici.UnmarshalMessage(sh, &keys); err != nil {
		t.Fatal(err)
	}
	secrets = keys.Keys
	slices.Sort(secrets)
	sm, err := s.Stream(ctx, "list-sas", "list-sa", nil)
	if err != nil {
		t.Fatal(err)
	}
	all, err := parseSAs(sm)
	if err != nil {
		t.Fatal(err)
	}
	for name, list := range all {
		for _, sa := range list {
			sas = append(sas, name+" "+string(sa.state))
		}
	}
	slices.Sort(sas)
	return conns, secrets, sas
}

func TestPrivilegedCharonApply(t *testing.T) {
	ch, stop := startCharon(t)
	ctx := context.Background()

	var mu sync.Mutex
	var calls []string
	take := func() []string {
		mu.Lock()
		defer mu.Unlock()
		c := calls
		calls = nil
		return c
	}
	var logs bytes.Buffer
	m := NewManager(func(ctx context.Context) (Session, error) {
		s, err := Dial(ctx, ch.SocketPath())
		if err != nil {
			return nil, err
		}
		return recordingSession{Session: s, mu: &mu, calls: &calls}, nil
	}, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	defer m.Close()

	obs, err := Dial(ctx, ch.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Close()

	// An operator's own connection, which must survive.
	site, err := vici.MarshalMessage(map[string]connConfig{"site-x": connConfigOf(tunnel("x", "203.0.113.9", psk1))})
	must(t, err)
	if _, err := obs.Call(ctx, "load-conn", site); err != nil {
		t.Fatal(err)
	}

	if err := m.Apply(ctx, twoTunnels()); err != nil {
		t.Fatal(err)
	}
	conns, secrets, sas := listNames(t, obs)
	if !slices.Equal(conns, []string{"mw-t1", "mw-t2", "site-x"}) || !slices.Equal(secrets, []string{"mw-t1", "mw-t2"}) {
		t.Errorf("after apply: conns %v secrets %v", conns, secrets)
	}
	// start_action trap|start initiated both at load: charon is trying.
	if !slices.Equal(sas, []string{"mw-t1 CONNECTING", "mw-t2 CONNECTING", "site-x CONNECTING"}) {
		t.Errorf("after apply: SAs %v", sas)
	}
	cm, _ := obs.Stream(ctx, "list-conns", "list-conn", nil)
	listed, err := parseConns(cm)
	must(t, err)
	if c := listed["mw-t1"]; !c.matches(twoTunnels().Tunnels[0]) {
		t.Errorf("charon lists mw-t1 as %+v", c)
	}
	take()

	// Idempotence on the real daemon: reads only.
	if err := m.Apply(ctx, twoTunnels()); err != nil {
		t.Fatal(err)
	}
	if w := writes(take()); len(w) != 0 {
		t.Errorf("second apply sent %q", w)
	}

	// A changed PSK reloads that tunnel only.
	d := twoTunnels()
	d.Tunnels[0].PSK = []byte("a-brand-new-key-0123456789abcdef")
	if err := m.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if w := writes(take()); !slices.Equal(w, []string{"load-shared", "load-conn"}) {
		t.Errorf("psk change sent %q", w)
	}

	// Removing t2 unloads its connection and secret; its IKE_SA goes too
	// (charon 5.9.8 ends a CONNECTING SA on unload-conn, so the explicit
	// terminate is only sent when list-sas still shows one).
	d.Tunnels = d.Tunnels[:1]
	if err := m.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if w := writes(take()); len(w) < 2 || !slices.Equal(w[:2], []string{"unload-conn", "unload-shared"}) {
		t.Errorf("removal sent %q", w)
	}
	conns, secrets, sas = listNames(t, obs)
	if !slices.Equal(conns, []string{"mw-t1", "site-x"}) || !slices.Equal(secrets, []string{"mw-t1"}) ||
		slices.ContainsFunc(sas, func(s string) bool { return strings.HasPrefix(s, "mw-t2 ") }) {
		t.Errorf("after removal: conns %v secrets %v sas %v", conns, secrets, sas)
	}

	st, err := m.Status(ctx)
	must(t, err)
	if len(st) != 1 || !st[0].Loaded || st[0].IKEState != IKEConnecting {
		t.Errorf("status %+v", st)
	}

	// charon dies: the supervisor restarts it, the next Apply notices the
	// empty daemon (after re-dialling) and loads again.
	pid := ch.PID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for ch.Restarts() == 0 || ch.PID() == 0 || ch.PID() == pid {
		if time.Now().After(deadline) {
			t.Fatal("charon not restarted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
	defer rcancel()
	must(t, ch.WaitReady(rctx))
	obs.Close()
	if obs, err = Dial(ctx, ch.SocketPath()); err != nil {
		t.Fatal(err)
	}
	err = m.Apply(ctx, d) // the old session is dead: this may fail once
	if err != nil {
		t.Logf("first apply after restart: %v", err)
		must(t, m.Apply(ctx, d))
	}
	conns, secrets, _ = listNames(t, obs)
	if !slices.Equal(conns, []string{"mw-t1"}) || !slices.Equal(secrets, []string{"mw-t1"}) {
		t.Errorf("after charon restart: conns %v secrets %v", conns, secrets)
	}

	must(t, m.Cleanup(ctx))
	conns, secrets, sas = listNames(t, obs)
	if len(conns)+len(secrets)+len(sas) != 0 {
		t.Errorf("after cleanup: conns %v secrets %v sas %v", conns, secrets, sas)
	}
	for _, leak := range []string{string(psk1[2:12]), "a-brand-new-key"} {
		if strings.Contains(logs.String(), leak) {
			t.Errorf("our log leaks a PSK:\n%s", logs.String())
		}
		if b, _ := os.ReadFile(ch.LogPath()); bytes.Contains(b, []byte(leak)) {
			t.Errorf("charon's log contains a PSK")
		}
	}

	// Stopping: Run returns on cancel and charon is gone.
	last := ch.PID()
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v", err)
	}
	if err := syscall.Kill(last, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("charon pid %d still exists after stop: %v", last, err)
	}
}

// TestPrivilegedViciStreamComplete loads many connections into a real
// charon and lists them repeatedly, interleaved with plain commands: every
// listing must be complete and no event may leak into the next command
// (the govici CallStreaming failure ViciSession.Stream avoids).
func TestPrivilegedViciStreamComplete(t *testing.T) {
	ch, _ := startCharon(t)
	ctx := context.Background()
	s, err := Dial(ctx, ch.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 300
	for i := range n {
		// A minimal connection: the numbers govici always sends (version,
		// keyingtries, the bools) are valid values for charon.
		msg, err := vici.MarshalMessage(map[string]connConfig{fmt.Sprintf("mw-s%03d", i): {
			Version:     2,
			LocalAddrs:  []string{"192.0.2.1"},
			RemoteAddrs: []string{fmt.Sprintf("198.51.%d.%d", 100+i/250, 1+i%250)},
			Local:       authConfig{Auth: "psk"},
			Remote:      authConfig{Auth: "psk"},
			Children:    map[string]childConfig{ChildName: {Mode: "transport"}},
		}})
		must(t, err)
		if _, err := s.Call(ctx, "load-conn", msg); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 30 {
		msgs, err := s.Stream(ctx, "list-conns", "list-conn", nil)
		if err != nil {
			t.Fatal(err)
		}
		listed, err := parseConns(msgs)
		must(t, err)
		if got := len(listed); got != n {
			t.Fatalf("round %d: list-conns returned %d connections, want %d", round, got, n)
		}
		if _, err := s.Call(ctx, "get-shared", nil); err != nil {
			t.Fatalf("round %d: command after a stream: %v", round, err)
		}
	}
}
