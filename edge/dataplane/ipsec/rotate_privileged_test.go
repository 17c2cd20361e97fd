package ipsec

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/dataplane/kernel"
	"github.com/meshwan/meshwan/edge/dataplane/netnstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestPrivilegedRotationAcceptOnlyKeys proves on two real charons what
// make-before-break rotation relies on: a key loaded as an accept-only
// secret (owned by the remote identity alone) is accepted from the peer
// while the primary key is still what this end signs with. The initiator
// moves to the new key (new primary, old accepted) while the responder is
// still staged (old primary, new accepted): its re-authentication builds
// a new IKE_SA (each end signs with a different key) and the old IKE_SA
// goes. After both drop the old key, a further re-authentication works
// with the new key alone; and a mismatched key with nothing accepted
// fails, so the accept-only keys are what made the difference.
func TestPrivilegedRotationAcceptOnlyKeys(t *testing.T) {
	netnstest.RequireRoot(t)
	ctx := context.Background()
	nsA, nsB := netnstest.New(t), netnstest.New(t)
	ha, err := kernel.NewNetlinkHandle(nsA)
	must(t, err)
	defer ha.Close()
	hb, err := kernel.NewNetlinkHandle(nsB)
	must(t, err)
	defer hb.Close()
	// ESP in the kernel is what the VM lab has and the build hosts lack.
	probe := &netlink.Gretun{LinkAttrs: netlink.NewLinkAttrs(), Local: net.ParseIP("192.0.2.1"), Remote: net.ParseIP("192.0.2.2")}
	probe.Name = "probe"
	if err := ha.LinkAdd(probe); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) || strings.Contains(err.Error(), "not supported") {
			t.Skipf("kernel has no GRE (%v): run in the VM lab", err)
		}
		t.Fatal(err)
	}
	must(t, ha.LinkDel(probe))
	v := &netlink.Veth{LinkAttrs: netlink.NewLinkAttrs(), PeerName: "wan0", PeerNamespace: netlink.NsFd(int(nsB))}
	v.Name = "wan0"
	must(t, ha.LinkAdd(v))
	for _, x := range []struct {
		h    *kernel.NetlinkHandle
		cidr string
	}{{ha, "192.0.2.1/24"}, {hb, "192.0.2.2/24"}} {
		l, err := x.h.LinkByName("wan0")
		must(t, err)
		ad, err := netlink.ParseAddr(x.cidr)
		must(t, err)
		must(t, x.h.AddrAdd(l, ad))
		must(t, x.h.LinkSetUp(l))
		lo, err := x.h.LinkByName("lo")
		must(t, err)
		must(t, x.h.LinkSetUp(lo))
	}

	type end struct {
		m      *Manager
		charon *Charon
		d      dataplane.Desired
	}
	start := func(ns string, d dataplane.Desired) *end {
		c, err := NewCharon(CharonConfig{RunDir: t.TempDir(), NetNS: ns, LogLevel: 1})
		must(t, err)
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- c.Run(cctx) }()
		t.Cleanup(func() { cancel(); <-done })
		rctx, rcancel := context.WithTimeout(ctx, 60*time.Second)
		defer rcancel()
		must(t, c.WaitReady(rctx))
		sock := c.SocketPath()
		m := NewManager(func(ctx context.Context) (Session, error) { return Dial(ctx, sock) }, Options{})
		t.Cleanup(func() { _ = m.Close() })
		return &end{m: m, charon: c, d: d}
	}
	oldKey := []byte("old-key-0123456789abcdef01234567")
	newKey := []byte("new-key-0123456789abcdef01234567")
	other := []byte("unrelated-key-0123456789abcdef01")
	a := start(netnstest.Path(nsA), siteDesired("a", "192.0.2.1", "192.0.2.2", "10.255.0.1/30", "10.255.0.2", "10.2.1.0/24", "10.1.1.0/24", oldKey))
	b := start(netnstest.Path(nsB), siteDesired("b", "192.0.2.2", "192.0.2.1", "10.255.0.2/30", "10.255.0.1", "10.1.1.0/24", "10.2.1.0/24", oldKey))
	b.d.Tunnels[0].Passive = true
	keys := func(e *end, serial uint64, psk []byte, accept ...[]byte) {
		t.Helper()
		e.d.Tunnels[0].PSK, e.d.Tunnels[0].AcceptPSKs, e.d.Tunnels[0].PSKSerial = psk, accept, serial
		must(t, e.m.Apply(ctx, e.d))
		st, err := e.m.Status(ctx)
		must(t, err)
		if st[0].PSKSerial != serial {
			t.Fatalf("%s reports serial %d after applying %d", e.d.Site, st[0].PSKSerial, serial)
		}
	}
	status := func(e *end) Status {
		t.Helper()
		st, err := e.m.Status(ctx)
		must(t, err)
		return st[0]
	}
	// waitNewSA waits until a has exactly one IKE_SA, established, with
	// an id other than old's, and returns it.
	waitNewSA := func(desc, old string) Status {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			s := status(a)
			if s.IKESAs == 1 && s.IKEState == IKEEstablished && s.ChildState == ChildInstalled && s.IKEIDs != old {
				t.Logf("%s: IKE_SA %s (was %s)", desc, s.IKEIDs, old)
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: a has %+v (old IKE_SA %s)\ncharon a:\n%s\ncharon b:\n%s", desc, s, old,
					tailFile(a.charon.LogPath()), tailFile(b.charon.LogPath()))
			}
			time.Sleep(250 * time.Millisecond)
		}
	}

	keys(b, 1, oldKey)
	keys(a, 1, oldKey)
	first := waitNewSA("first IKE_SA", "")

	// Staged on both ends: nothing re-authenticates.
	keys(b, 2, oldKey, newKey)
	keys(a, 2, oldKey, newKey)
	if s := status(a); s.IKEIDs != first.IKEIDs {
		t.Fatalf("staging the new key touched the IKE_SA: %s -> %s", first.IKEIDs, s.IKEIDs)
	}
	// The initiator commits first, the responder is still staged.
	keys(a, 3, newKey, oldKey)
	second := waitNewSA("re-authentication, each end signing with another key", first.IKEIDs)
	keys(b, 3, newKey, oldKey)
	// Done: the new key alone.
	keys(b, 4, newKey)
	keys(a, 4, newKey)
	a.m.mu.Lock()
	a.m.reauth(ctx, ConnName(a.d.Tunnels[0].ID))
	a.m.mu.Unlock()
	waitNewSA("re-authentication with the new key alone", second.IKEIDs)

	// Control: a key b neither uses nor accepts fails authentication.
	keys(a, 5, other)
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(readLog(a.charon.LogPath())+readLog(b.charon.LogPath()), "AUTHENTICATION_FAILED") {
		if time.Now().After(deadline) {
			t.Fatalf("a mismatched key did not fail authentication: a %+v\ncharon a:\n%s\ncharon b:\n%s", status(a),
				tailFile(a.charon.LogPath()), tailFile(b.charon.LogPath()))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func readLog(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func tailFile(path string) string {
	lines := strings.Split(readLog(path), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}
