package ipsec

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/strongswan/govici/vici"
)

var psk1 = []byte("\x00\x01secret-key-one-0123456789abcdef\xff")

func tunnel(id, remote string, psk []byte) dataplane.Tunnel {
	return dataplane.Tunnel{
		ID:             id,
		LinkName:       "mw-" + id,
		LocalUnderlay:  netip.MustParseAddr("192.0.2.1"),
		RemoteUnderlay: netip.MustParseAddr(remote),
		LocalInner:     netip.MustParsePrefix("10.255.0.1/30"),
		RemoteInner:    netip.MustParseAddr("10.255.0.2"),
		PSK:            psk,
	}
}

func desired(ts ...dataplane.Tunnel) dataplane.Desired {
	// Distinct /30s keep Validate happy when several tunnels are used.
	for i := range ts {
		ts[i].LocalInner = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 255, byte(i), 1}), 30)
		ts[i].RemoteInner = netip.AddrFrom4([4]byte{10, 255, byte(i), 2})
	}
	return dataplane.Desired{Site: "a", Tunnels: ts}
}

func twoTunnels() dataplane.Desired {
	return desired(tunnel("t1", "198.51.100.1", psk1), tunnel("t2", "198.51.100.2", []byte("another-key-0123456789abcdef-xyz")))
}

func TestConnMessage(t *testing.T) {
	tu := tunnel("t1", "198.51.100.1", psk1)
	tu.IPsec = dataplane.IPsecPolicy{IKEProposal: "aes256-sha256-modp2048,aes128-sha256-modp2048", ESPLifetime: 30 * time.Minute}
	m, err := ConnMessage(tu)
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  mw-t1 {
    version = 2
    local_addrs = 192.0.2.1
    remote_addrs = 198.51.100.1
    proposals = aes256-sha256-modp2048,aes128-sha256-modp2048
    rekey_time = 28800s
    over_time = 2880s
    rand_time = 2880s
    dpd_delay = 30s
    keyingtries = 0
    mobike = no
    encap = no
    send_certreq = no
    local {
      auth = psk
      id = 192.0.2.1
    }
    remote {
      auth = psk
      id = 198.51.100.1
    }
    children {
      gre {
        mode = transport
        local_ts = dynamic[gre]
        remote_ts = dynamic[gre]
        esp_proposals = aes256gcm16-modp2048
        rekey_time = 1800s
        life_time = 1980s
        rand_time = 180s
        start_action = trap|start
        dpd_action = restart
        close_action = trap
      }
    }
  }
}`
	if got := strings.TrimSpace(m.String()); got != want {
		t.Errorf("conn message:\n%s\nwant:\n%s", got, want)
	}
	if strings.Contains(m.String(), string(psk1[2:12])) {
		t.Error("connection message contains the PSK")
	}
}

func TestSecretMessage(t *testing.T) {
	m, err := SecretMessage(tunnel("t1", "198.51.100.1", psk1))
	if err != nil {
		t.Fatal(err)
	}
	var got sharedSecret
	must(t, vici.UnmarshalMessage(m, &got))
	if got.Data != string(psk1) {
		t.Errorf("data = %x, want the raw key bytes %x", got.Data, psk1)
	}
	if got.ID != "mw-t1" || got.Type != "IKE" || !slices.Equal(got.Owners, []string{"192.0.2.1", "198.51.100.1"}) {
		t.Errorf("secret message fields: %v", m.Keys())
	}
}

func TestParse(t *testing.T) {
	// Shapes as charon 5.9.8 sends them.
	conn := vici.NewMessage()
	sec := vici.NewMessage()
	must(t, sec.Set("local_addrs", []string{"192.0.2.1"}))
	must(t, sec.Set("remote_addrs", []string{"198.51.100.1"}))
	must(t, sec.Set("version", "IKEv2")) // not read
	ch := vici.NewMessage()
	gre := vici.NewMessage()
	must(t, gre.Set("mode", "TRANSPORT"))
	must(t, ch.Set("gre", gre))
	must(t, sec.Set("children", ch))
	must(t, conn.Set("mw-t1", sec))
	got, err := parseConns([]*vici.Message{conn})
	must(t, err)
	if c := got["mw-t1"]; !c.matches(tunnel("t1", "198.51.100.1", nil)) || c.matches(tunnel("t1", "198.51.100.9", nil)) {
		t.Errorf("parsed conn %+v", c)
	}

	sa := vici.NewMessage()
	s := vici.NewMessage()
	must(t, s.Set("state", "ESTABLISHED"))
	must(t, s.Set("uniqueid", "3"))
	cs := vici.NewMessage()
	c1 := vici.NewMessage()
	for k, v := range map[string]string{"name": "gre", "state": "INSTALLED", "bytes-in": "100", "bytes-out": "200", "packets-in": "1", "packets-out": "2"} {
		must(t, c1.Set(k, v))
	}
	must(t, cs.Set("gre-7", c1))
	must(t, s.Set("child-sas", cs))
	must(t, sa.Set("mw-t1", s))
	sas, err := parseSAs([]*vici.Message{sa})
	must(t, err)
	want := []ikeSA{{id: "3", state: IKEEstablished, children: []childSA{{name: "gre", state: ChildInstalled, bytesIn: 100, bytesOut: 200, packetsIn: 1, packetsOut: 2}}}}
	if !slices.EqualFunc(sas["mw-t1"], want, func(a, b ikeSA) bool {
		return a.id == b.id && a.state == b.state && slices.Equal(a.children, b.children)
	}) {
		t.Errorf("parsed SAs %+v", sas)
	}
}

func TestNeedsInitiate(t *testing.T) {
	child := func(st ChildState) []childSA { return []childSA{{name: "gre", state: st}} }
	tests := []struct {
		name string
		sas  []ikeSA
		want bool
	}{
		{"no SA", nil, true},
		{"connecting", []ikeSA{{state: "CONNECTING"}}, false},
		{"established with child", []ikeSA{{state: IKEEstablished, children: child(ChildInstalled)}}, false},
		{"established, child rekeying", []ikeSA{{state: IKEEstablished, children: child(ChildRekeying)}}, false},
		{"established without child", []ikeSA{{state: IKEEstablished}}, true},
		{"established, child deleting", []ikeSA{{state: IKEEstablished, children: child(ChildDeleting)}}, true},
		{"only deleting", []ikeSA{{state: "DELETING"}}, true},
		{"duplicate, one good", []ikeSA{{state: IKEEstablished}, {state: IKEEstablished, children: child(ChildInstalled)}}, false},
	}
	for _, tc := range tests {
		if got := needsInitiate(tc.sas); got != tc.want {
			t.Errorf("%s: needsInitiate = %v, want %v", tc.name, got, tc.want)
		}
	}
}

const twoState = `conn mw-t1 [192.0.2.1]->[198.51.100.1] ike [aes256-sha256-modp2048] esp [aes256gcm16-modp2048] start trap|start
conn mw-t2 [192.0.2.1]->[198.51.100.2] ike [aes256-sha256-modp2048] esp [aes256gcm16-modp2048] start trap|start
sa mw-t1 CONNECTING children 0
sa mw-t2 CONNECTING children 0
secret mw-t1 IKE owners [192.0.2.1 198.51.100.1] key 34 bytes
secret mw-t2 IKE owners [192.0.2.1 198.51.100.2] key 32 bytes`

func TestApplyLoadsAndIsIdempotent(t *testing.T) {
	ctx := context.Background()
	f := NewFakeCharon()
	var logs bytes.Buffer
	m := NewManager(f.dial, Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err := m.Apply(ctx, twoTunnels()); err != nil {
		t.Fatal(err)
	}
	wantCalls := []string{"list-conns", "get-shared",
		"load-shared mw-t1", "load-conn mw-t1", "load-shared mw-t2", "load-conn mw-t2",
		"list-sas"}
	if got := f.takeCalls(); !slices.Equal(got, wantCalls) {
		t.Errorf("calls %q\nwant  %q", got, wantCalls)
	}
	if got := f.String(); got != twoState {
		t.Errorf("charon state:\n%s\nwant:\n%s", got, twoState)
	}
	if err := m.Apply(ctx, twoTunnels()); err != nil {
		t.Fatal(err)
	}
	if got := f.takeCalls(); !slices.Equal(got, []string{"list-conns", "get-shared", "list-sas"}) {
		t.Errorf("second apply calls %q, want reads only", got)
	}
	for _, leak := range []string{string(psk1[2:12]), hex.EncodeToString(psk1)[4:24]} {
		if strings.Contains(logs.String(), leak) {
			t.Fatalf("log leaks the PSK:\n%s", logs.String())
		}
	}
}

func TestApplyChanges(t *testing.T) {
	tests := []struct {
		name   string
		change func(d *dataplane.Desired)
		want   []string // write calls
	}{
		{"psk changed", func(d *dataplane.Desired) { d.Tunnels[0].PSK = []byte("a-brand-new-key-0123456789abcdef") },
			[]string{"load-shared mw-t1", "load-conn mw-t1"}},
		{"esp proposal changed", func(d *dataplane.Desired) { d.Tunnels[1].IPsec.ESPProposal = "aes128gcm16" },
			[]string{"load-shared mw-t2", "load-conn mw-t2"}},
		{"lifetime changed", func(d *dataplane.Desired) { d.Tunnels[1].IPsec.IKELifetime = time.Hour },
			[]string{"load-shared mw-t2", "load-conn mw-t2"}},
		{"peer moved", func(d *dataplane.Desired) { d.Tunnels[0].RemoteUnderlay = netip.MustParseAddr("198.51.100.77") },
			[]string{"load-shared mw-t1", "load-conn mw-t1"}},
		{"tunnel removed", func(d *dataplane.Desired) { d.Tunnels = d.Tunnels[1:] },
			[]string{"unload-conn mw-t1", "unload-shared mw-t1", "terminate mw-t1"}},
		{"nothing", func(d *dataplane.Desired) {}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f := NewFakeCharon()
			m := NewManager(f.dial, Options{})
			must(t, m.Apply(ctx, twoTunnels()))
			f.takeCalls()
			d := twoTunnels()
			tc.change(&d)
			must(t, m.Apply(ctx, d))
			if got := writes(f.takeCalls()); !slices.Equal(got, tc.want) {
				t.Errorf("writes %q, want %q", got, tc.want)
			}
			must(t, m.Apply(ctx, d))
			if got := writes(f.takeCalls()); len(got) != 0 {
				t.Errorf("third apply writes %q", got)
			}
		})
	}
}

func TestApplyAfterCharonRestartAndAgentRestart(t *testing.T) {
	ctx := context.Background()
	f := NewFakeCharon()
	m := NewManager(f.dial, Options{})
	must(t, m.Apply(ctx, twoTunnels()))

	// charon restarted: everything gone, and the old socket is dead.
	f.mu.Lock()
	f.conns, f.secrets, f.sas = map[string]connConfig{}, map[string]sharedSecret{}, map[string][]ikeSA{}
	f.broken = true
	f.mu.Unlock()
	f.takeCalls()
	if err := m.Apply(ctx, twoTunnels()); err == nil {
		t.Fatal("apply on a dead session succeeded")
	}
	must(t, m.Apply(ctx, twoTunnels())) // re-dials
	if f.dials != 2 {
		t.Errorf("dials = %d, want a re-dial", f.dials)
	}
	if got := f.String(); got != twoState {
		t.Errorf("after charon restart:\n%s", got)
	}

	// Agent restart: a new Manager reloads once (charon keeps SAs on an
	// identical load), then is quiet.
	m2 := NewManager(f.dial, Options{})
	f.takeCalls()
	must(t, m2.Apply(ctx, twoTunnels()))
	if got := writes(f.takeCalls()); !slices.Equal(got, []string{"load-shared mw-t1", "load-conn mw-t1", "load-shared mw-t2", "load-conn mw-t2"}) {
		t.Errorf("new manager writes %q", got)
	}
	must(t, m2.Apply(ctx, twoTunnels()))
	if got := writes(f.takeCalls()); len(got) != 0 {
		t.Errorf("new manager second apply writes %q", got)
	}
}

func TestApplyInitiates(t *testing.T) {
	ctx := context.Background()
	f := NewFakeCharon()
	m := NewManager(f.dial, Options{})
	must(t, m.Apply(ctx, twoTunnels()))
	f.mu.Lock()
	delete(f.sas, "mw-t1") // charon gave up on t1's peer
	f.sas["mw-t2"] = []ikeSA{{state: IKEEstablished}}
	f.mu.Unlock()
	f.takeCalls()
	must(t, m.Apply(ctx, twoTunnels()))
	if got := writes(f.takeCalls()); !slices.Equal(got, []string{"initiate mw-t1", "initiate mw-t2"}) {
		t.Errorf("writes %q, want both initiated", got)
	}
	f.mu.Lock()
	f.sas["mw-t2"] = []ikeSA{{state: IKEEstablished, children: []childSA{{name: "gre", state: ChildInstalled}}}}
	f.mu.Unlock()
	must(t, m.Apply(ctx, twoTunnels()))
	if got := writes(f.takeCalls()); len(got) != 0 {
		t.Errorf("writes %q with SAs in place", got)
	}
}

func TestApplyLeavesForeignAlone(t *testing.T) {
	ctx := context.Background()
	f := NewFakeCharon()
	// A connection and secret an operator loaded with swanctl.
	f.conns["site-x"] = connConfigOf(tunnel("x", "203.0.113.9", psk1))
	f.secrets["site-x"] = sharedSecret{ID: "site-x", Type: "IKE", Data: "k"}
	m := NewManager(f.dial, Options{})
	must(t, m.Apply(ctx, twoTunnels()))
	must(t, m.Cleanup(ctx))
	got := f.String()
	if !strings.Contains(got, "conn site-x") || !strings.Contains(got, "secret site-x") || strings.Contains(got, "mw-t") {
		t.Errorf("after apply+cleanup:\n%s", got)
	}
}

func TestApplyFailureIsolatedAndRetried(t *testing.T) {
	ctx := context.Background()
	f := NewFakeCharon()
	m := NewManager(f.dial, Options{})
	boom := errors.New("boom")
	f.fail["load-conn mw-t1"] = boom
	err := m.Apply(ctx, twoTunnels())
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "tunnel t1") {
		t.Fatalf("got %v", err)
	}
	if !strings.Contains(f.String(), "conn mw-t2") {
		t.Errorf("t2 not loaded:\n%s", f.String())
	}
	delete(f.fail, "load-conn mw-t1")
	f.takeCalls()
	must(t, m.Apply(ctx, twoTunnels()))
	if got := writes(f.takeCalls()); !slices.Equal(got, []string{"load-shared mw-t1", "load-conn mw-t1"}) {
		t.Errorf("retry writes %q", got)
	}
}

func TestApplyInvalidTouchesNothing(t *testing.T) {
	f := NewFakeCharon()
	m := NewManager(f.dial, Options{})
	d := twoTunnels()
	d.Tunnels[0].PSK = []byte("short")
	if err := m.Apply(context.Background(), d); !errors.Is(err, dataplane.ErrInvalid) {
		t.Fatalf("got %v", err)
	}
	if f.dials != 0 || len(f.takeCalls()) != 0 {
		t.Error("invalid state reached charon")
	}
}

func TestStatus(t *testing.T) {
	ctx := context.Background()
	f := NewFakeCharon()
	m := NewManager(f.dial, Options{})
	must(t, m.Apply(ctx, twoTunnels()))
	f.mu.Lock()
	f.sas["mw-t1"] = []ikeSA{
		{state: IKEEstablished, children: []childSA{
			{name: "gre", state: ChildInstalled, bytesIn: 100, bytesOut: 200, packetsIn: 1, packetsOut: 2},
			{name: "gre", state: ChildInstalled, bytesIn: 10, bytesOut: 20, packetsIn: 3, packetsOut: 4}}},
		{state: "CONNECTING"},
	}
	delete(f.sas, "mw-t2")
	delete(f.conns, "mw-t2")
	f.mu.Unlock()
	f.takeCalls()
	st, err := m.Status(ctx)
	must(t, err)
	want := []Status{
		{TunnelID: "t1", Conn: "mw-t1", Loaded: true, IKEState: IKEEstablished, ChildState: ChildInstalled, IKESAs: 2, ChildSAs: 2, IKEIDs: "3,4", // ids 1 and 2 went to the SAs Apply started
			BytesIn: 110, BytesOut: 220, PacketsIn: 4, PacketsOut: 6},
		{TunnelID: "t2", Conn: "mw-t2"},
	}
	if !slices.Equal(st, want) {
		t.Errorf("status\n%+v\nwant\n%+v", st, want)
	}
	if w := writes(f.takeCalls()); len(w) != 0 {
		t.Errorf("status wrote %q", w)
	}
}

func TestStrongswanConf(t *testing.T) {
	got := StrongswanConf([]string{"random", "vici"}, 2)
	for _, want := range []string{
		"load = random vici\n",
		"socket = unix:///run/charon.vici",
		"path = /run/charon.log",
		"flush_line = yes",
		"default = 2",
		"install_routes = no",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("strongswan.conf lacks %q:\n%s", want, got)
		}
	}
	if _, err := NewCharon(CharonConfig{RunDir: "relative"}); err == nil {
		t.Error("relative RunDir accepted")
	}
	if _, err := NewCharon(CharonConfig{RunDir: "/" + strings.Repeat("x", 100)}); err == nil {
		t.Error("over-long socket path accepted")
	}
}

// TestCharonFirstStartFailureIsFatal: a supervisor that cannot start
// charon at all returns instead of retrying forever. (Without root the
// mount namespace fails first; with root the missing binary does.)
func TestCharonFirstStartFailureIsFatal(t *testing.T) {
	c, err := NewCharon(CharonConfig{RunDir: t.TempDir(), Binary: "/nonexistent/charon"})
	must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = c.Run(ctx)
	if err == nil || errors.Is(err, context.DeadlineExceeded) || c.Restarts() != 0 {
		t.Fatalf("Run = %v after %d restarts, want an immediate start error", err, c.Restarts())
	}
	t.Logf("Run: %v", err)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestPassiveEndNeverInitiates: the passive end of a tunnel only traps, so
// two ends loading at once do not negotiate two IKE_SAs.
func TestPassiveEndNeverInitiates(t *testing.T) {
	ctx := context.Background()
	f := NewFakeCharon()
	m := NewManager(f.dial, Options{})
	d := twoTunnels()
	d.Tunnels[0].Passive = true
	must(t, m.Apply(ctx, d))
	msg, err := ConnMessage(d.Tunnels[0])
	if err != nil {
		t.Fatal(err)
	}
	child := msg.Get(ConnName(d.Tunnels[0].ID)).(*vici.Message).Get("children").(*vici.Message).Get("gre").(*vici.Message)
	if child.Get("start_action") != "trap" || child.Get("dpd_action") != "trap" {
		t.Errorf("passive end: start_action %v dpd_action %v, want trap/trap", child.Get("start_action"), child.Get("dpd_action"))
	}
	f.mu.Lock()
	delete(f.sas, "mw-t1")
	delete(f.sas, "mw-t2")
	f.mu.Unlock()
	f.takeCalls()
	must(t, m.Apply(ctx, d))
	if got := writes(f.takeCalls()); !slices.Equal(got, []string{"initiate mw-t2"}) {
		t.Errorf("writes %q, want only the active tunnel t2 initiated", got)
	}
}
