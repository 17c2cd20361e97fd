package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

type netlinkRoute = netlink.Route

func netlinkProto(p int) netlink.RouteProtocol { return netlink.RouteProtocol(p) }

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func rts(spec ...string) []Route {
	var out []Route
	for _, s := range spec {
		dst, via, _ := strings.Cut(s, " via ")
		r := Route{Dst: mp(dst)}
		for _, v := range strings.Split(via, ",") {
			r.Via = append(r.Via, ma(v))
		}
		out = append(out, r)
	}
	return out
}

// TestKernelSyncFake walks the route sync through its life on the fake
// kernel: install, ECMP grow and shrink in place, withdraw, foreign routes
// left alone, a conflict reported, and failures retried.
func TestKernelSyncFake(t *testing.T) {
	f := NewFakeRoutes()
	f.AddForeign(netlink.Route{Dst: ipnet("0.0.0.0/0"), Gw: ma("192.0.2.1").AsSlice(), Protocol: unix.RTPROT_BOOT})
	f.AddForeign(netlink.Route{Dst: ipnet("10.3.0.0/16"), Gw: ma("10.255.0.1").AsSlice(), Protocol: 240})                            // link's static route, metric 0
	f.AddForeign(netlink.Route{Dst: ipnet("10.4.0.0/16"), Gw: ma("10.9.9.9").AsSlice(), Protocol: unix.RTPROT_STATIC, Priority: 20}) // hand-made, our key
	f.AddForeign(netlink.Route{Dst: ipnet("10.7.0.0/16"), Gw: ma("10.255.0.1").AsSlice(), Protocol: RouteProtocol, Priority: 20, Table: 100})
	k, adopted, err := newKernelSync(f, mainTable, 20, discard())
	if err != nil || adopted != 0 {
		t.Fatalf("newKernelSync: adopted %d, %v (a route of ours in another table must not count)", adopted, err)
	}
	step := func(name string, want []Route, wantErr bool, state string, writes ...string) {
		t.Helper()
		f.ResetCalls()
		_, err := k.sync(want, false)
		if (err != nil) != wantErr {
			t.Errorf("%s: err = %v, want error %v", name, err, wantErr)
		}
		if got := f.String(); got != state {
			t.Errorf("%s: state:\n%s\nwant:\n%s", name, got, state)
		}
		if got := strings.Join(f.Writes(), "\n"); got != strings.Join(writes, "\n") {
			t.Errorf("%s: writes:\n%s\nwant:\n%s", name, got, strings.Join(writes, "\n"))
		}
	}
	const foreign = `0.0.0.0/0 via 192.0.2.1 proto 3 metric 0 table 254
10.3.0.0/16 via 10.255.0.1 proto 240 metric 0 table 254
10.4.0.0/16 via 10.9.9.9 proto 4 metric 20 table 254
10.7.0.0/16 via 10.255.0.1 proto 241 metric 20 table 100`

	step("install", rts("10.1.0.0/16 via 10.255.0.1", "10.3.0.0/16 via 10.255.0.5"), false,
		`0.0.0.0/0 via 192.0.2.1 proto 3 metric 0 table 254
10.1.0.0/16 via 10.255.0.1 proto 241 metric 20 table 254
10.3.0.0/16 via 10.255.0.1 proto 240 metric 0 table 254
10.3.0.0/16 via 10.255.0.5 proto 241 metric 20 table 254
10.4.0.0/16 via 10.9.9.9 proto 4 metric 20 table 254
10.7.0.0/16 via 10.255.0.1 proto 241 metric 20 table 100`,
		"RouteReplace 10.1.0.0/16 via 10.255.0.1 proto 241 metric 20 table 254",
		"RouteReplace 10.3.0.0/16 via 10.255.0.5 proto 241 metric 20 table 254")

	step("again: no writes", rts("10.1.0.0/16 via 10.255.0.1", "10.3.0.0/16 via 10.255.0.5"), false,
		`0.0.0.0/0 via 192.0.2.1 proto 3 metric 0 table 254
10.1.0.0/16 via 10.255.0.1 proto 241 metric 20 table 254
10.3.0.0/16 via 10.255.0.1 proto 240 metric 0 table 254
10.3.0.0/16 via 10.255.0.5 proto 241 metric 20 table 254
10.4.0.0/16 via 10.9.9.9 proto 4 metric 20 table 254
10.7.0.0/16 via 10.255.0.1 proto 241 metric 20 table 100`)

	step("ECMP: second hub, replaced in place", rts("10.1.0.0/16 via 10.255.0.1,10.255.0.5", "10.3.0.0/16 via 10.255.0.5"), false,
		`0.0.0.0/0 via 192.0.2.1 proto 3 metric 0 table 254
10.1.0.0/16 via 10.255.0.1,10.255.0.5 proto 241 metric 20 table 254
10.3.0.0/16 via 10.255.0.1 proto 240 metric 0 table 254
10.3.0.0/16 via 10.255.0.5 proto 241 metric 20 table 254
10.4.0.0/16 via 10.9.9.9 proto 4 metric 20 table 254
10.7.0.0/16 via 10.255.0.1 proto 241 metric 20 table 100`,
		"RouteReplace 10.1.0.0/16 via 10.255.0.1,10.255.0.5 proto 241 metric 20 table 254")

	step("hub lost: ECMP shrinks in place", rts("10.1.0.0/16 via 10.255.0.5", "10.3.0.0/16 via 10.255.0.5"), false,
		`0.0.0.0/0 via 192.0.2.1 proto 3 metric 0 table 254
10.1.0.0/16 via 10.255.0.5 proto 241 metric 20 table 254
10.3.0.0/16 via 10.255.0.1 proto 240 metric 0 table 254
10.3.0.0/16 via 10.255.0.5 proto 241 metric 20 table 254
10.4.0.0/16 via 10.9.9.9 proto 4 metric 20 table 254
10.7.0.0/16 via 10.255.0.1 proto 241 metric 20 table 100`,
		"RouteReplace 10.1.0.0/16 via 10.255.0.5 proto 241 metric 20 table 254")

	step("conflict with a hand-made route at our key: reported, untouched", rts("10.1.0.0/16 via 10.255.0.5", "10.3.0.0/16 via 10.255.0.5", "10.4.0.0/16 via 10.255.0.1"), false,
		`0.0.0.0/0 via 192.0.2.1 proto 3 metric 0 table 254
10.1.0.0/16 via 10.255.0.5 proto 241 metric 20 table 254
10.3.0.0/16 via 10.255.0.1 proto 240 metric 0 table 254
10.3.0.0/16 via 10.255.0.5 proto 241 metric 20 table 254
10.4.0.0/16 via 10.9.9.9 proto 4 metric 20 table 254
10.7.0.0/16 via 10.255.0.1 proto 241 metric 20 table 100`)

	if p, _ := k.sync(rts("10.1.0.0/16 via 10.255.0.5", "10.3.0.0/16 via 10.255.0.5", "10.4.0.0/16 via 10.255.0.1"), false); fmt.Sprint(p.Conflicts) != "[10.4.0.0/16 via 10.255.0.1]" {
		t.Errorf("conflicts = %v", p.Conflicts)
	}
	f.Fail("RouteDel 10.3.0.0/16", unix.EBUSY)
	step("withdraw with a failing delete", nil, true,
		`0.0.0.0/0 via 192.0.2.1 proto 3 metric 0 table 254
10.3.0.0/16 via 10.255.0.1 proto 240 metric 0 table 254
10.3.0.0/16 via 10.255.0.5 proto 241 metric 20 table 254
10.4.0.0/16 via 10.9.9.9 proto 4 metric 20 table 254
10.7.0.0/16 via 10.255.0.1 proto 241 metric 20 table 100`,
		"RouteDel 10.1.0.0/16 via 10.255.0.5 proto 241 metric 20 table 254",
		"RouteDel 10.3.0.0/16 via 10.255.0.5 proto 241 metric 20 table 254")
	f.Fail("RouteDel 10.3.0.0/16", nil)
	step("retry deletes it", nil, false, foreign,
		"RouteDel 10.3.0.0/16 via 10.255.0.5 proto 241 metric 20 table 254")

	f.SetConnected(mp("10.255.0.0/30"))
	step("gateway on a link that is gone: error, nothing written", rts("10.1.0.0/16 via 10.255.0.5"), true, foreign,
		"RouteReplace 10.1.0.0/16 via 10.255.0.5 proto 241 metric 20 table 254")

	f.Fail("RouteListFiltered", netlink.ErrDumpInterrupted)
	if _, err := k.sync(nil, false); !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Errorf("a dump that keeps failing must fail the pass, got %v", err)
	}
	f.Fail("RouteListFiltered", nil)
}

// TestKernelSyncRestartHold: routes of ours found at start are adopted and
// kept while the restart hold lasts, even if the RIB does not have them
// yet; a prefix the RIB confirms is no longer stale; when the hold ends,
// the rest goes. Foreign routes are never touched.
func TestKernelSyncRestartHold(t *testing.T) {
	f := NewFakeRoutes()
	for _, r := range []netlink.Route{
		{Dst: ipnet("10.1.0.0/16"), Gw: ma("10.255.0.1").AsSlice(), Protocol: RouteProtocol, Priority: 20},
		{Dst: ipnet("10.2.0.0/16"), MultiPath: []*netlink.NexthopInfo{{Gw: ma("10.255.0.1").AsSlice()}, {Gw: ma("10.255.0.5").AsSlice()}}, Protocol: RouteProtocol, Priority: 20},
		{Dst: ipnet("10.3.0.0/16"), Gw: ma("10.255.0.5").AsSlice(), Protocol: RouteProtocol, Priority: 20},
		{Dst: ipnet("10.9.0.0/16"), Gw: ma("10.255.0.5").AsSlice(), Protocol: unix.RTPROT_STATIC},
	} {
		f.AddForeign(r)
	}
	k, adopted, err := newKernelSync(f, mainTable, 20, discard())
	if err != nil || adopted != 3 {
		t.Fatalf("adopted %d, %v; want 3", adopted, err)
	}
	// The RIB is still empty right after the restart: nothing may go.
	if _, err := k.sync(nil, true); err != nil {
		t.Fatal(err)
	}
	if w := f.Writes(); len(w) != 0 {
		t.Fatalf("during the hold an empty RIB wrote %q", w)
	}
	// The first peer is back: 10.1 re-learned unchanged, 10.2 re-learned
	// with one gateway; 10.3 not (yet).
	f.ResetCalls()
	if _, err := k.sync(rts("10.1.0.0/16 via 10.255.0.1", "10.2.0.0/16 via 10.255.0.1"), true); err != nil {
		t.Fatal(err)
	}
	want := `10.1.0.0/16 via 10.255.0.1 proto 241 metric 20 table 254
10.2.0.0/16 via 10.255.0.1 proto 241 metric 20 table 254
10.3.0.0/16 via 10.255.0.5 proto 241 metric 20 table 254
10.9.0.0/16 via 10.255.0.5 proto 4 metric 0 table 254`
	if got := f.String(); got != want {
		t.Errorf("during the hold:\n%s\nwant:\n%s", got, want)
	}
	// 10.1 was confirmed: withdrawn now, it goes even during the hold.
	if _, err := k.sync(rts("10.2.0.0/16 via 10.255.0.1"), true); err != nil {
		t.Fatal(err)
	}
	want = `10.2.0.0/16 via 10.255.0.1 proto 241 metric 20 table 254
10.3.0.0/16 via 10.255.0.5 proto 241 metric 20 table 254
10.9.0.0/16 via 10.255.0.5 proto 4 metric 0 table 254`
	if got := f.String(); got != want {
		t.Errorf("confirmed then withdrawn:\n%s\nwant:\n%s", got, want)
	}
	// Hold over: the RIB is the truth.
	if _, err := k.sync(rts("10.2.0.0/16 via 10.255.0.1"), false); err != nil {
		t.Fatal(err)
	}
	want = `10.2.0.0/16 via 10.255.0.1 proto 241 metric 20 table 254
10.9.0.0/16 via 10.255.0.5 proto 4 metric 0 table 254`
	if got := f.String(); got != want {
		t.Errorf("after the hold:\n%s\nwant:\n%s", got, want)
	}
	if err := FlushRoutes(f, 0); err != nil {
		t.Fatal(err)
	}
	if got, want := f.String(), "10.9.0.0/16 via 10.255.0.5 proto 4 metric 0 table 254"; got != want {
		t.Errorf("after FlushRoutes:\n%s\nwant:\n%s", got, want)
	}
}

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

// ipnet parses a prefix into the *net.IPNet netlink uses.
func ipnet(s string) *net.IPNet {
	p := mp(s)
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}
