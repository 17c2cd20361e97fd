package bgp

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane"
	api "github.com/osrg/gobgp/v3/api"
)

func TestFromDataplane(t *testing.T) {
	d := dataplane.Desired{
		Site:        "b",
		LANPrefixes: []netip.Prefix{mp("10.2.1.0/24"), mp("10.2.0.7/16"), mp("10.2.1.0/24")},
		Tunnels: []dataplane.Tunnel{
			// BGP's passive end is the IKE responder (Tunnel.Passive), whatever
			// the address order: t-c-inet is passive with the lower address,
			// t-a-inet active with the higher one.
			{ID: "t-c-inet", LinkName: "mw-c-inet-inet", LocalInner: mp("10.255.0.5/30"), RemoteInner: ma("10.255.0.6"), RemoteSite: "c", Passive: true},
			{ID: "t-a-inet", LinkName: "mw-a-inet-inet", LocalInner: mp("10.255.0.2/30"), RemoteInner: ma("10.255.0.1"), RemoteSite: "a"},
			{ID: "t-a-lte", LinkName: "mw-a-lte-inet", LocalInner: mp("10.255.0.10/30"), RemoteInner: ma("10.255.0.9"), RemoteSite: "a", Passive: true},
		},
	}
	asn := map[string]uint32{"t-a-inet": 4200000001, "t-a-lte": 4200000001, "t-c-inet": 4200000003}
	got, err := FromDataplane(4200000002, d, asn)
	if err != nil {
		t.Fatal(err)
	}
	want := `originate 10.2.0.0/16
originate 10.2.1.0/24
neighbor 10.255.0.1 as 4200000001 local 10.255.0.2 port 0 desc t-a-inet if mw-a-inet-inet hold 9s keepalive 3s lan false passive false
neighbor 10.255.0.6 as 4200000003 local 10.255.0.5 port 0 desc t-c-inet if mw-c-inet-inet hold 9s keepalive 3s lan false passive true
neighbor 10.255.0.9 as 4200000001 local 10.255.0.10 port 0 desc t-a-lte if mw-a-lte-inet hold 9s keepalive 3s lan false passive true`
	if s := desiredText(got); s != want {
		t.Errorf("FromDataplane:\n%s\nwant:\n%s", s, want)
	}

	for name, tc := range map[string]struct {
		site uint32
		asn  map[string]uint32
	}{
		"missing remote ASN": {4200000002, map[string]uint32{"t-a-inet": 1, "t-a-lte": 1}},
		"iBGP":               {4200000001, asn},
	} {
		if _, err := FromDataplane(tc.site, d, tc.asn); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}

func TestDesiredValidation(t *testing.T) {
	ok := Neighbor{Addr: ma("10.255.0.1"), ASN: 2}
	for name, d := range map[string]Desired{
		"v6 prefix":      {Originate: []netip.Prefix{mp("2001:db8::/32")}},
		"v6 neighbor":    {Neighbors: []Neighbor{{Addr: ma("2001:db8::1"), ASN: 2}}},
		"zero ASN":       {Neighbors: []Neighbor{{Addr: ma("10.255.0.1")}}},
		"own ASN":        {Neighbors: []Neighbor{{Addr: ma("10.255.0.1"), ASN: 1}}},
		"twice":          {Neighbors: []Neighbor{ok, ok}},
		"short hold":     {Neighbors: []Neighbor{{Addr: ma("10.255.0.1"), ASN: 2, HoldTime: 2 * time.Second, KeepAlive: time.Second}}},
		"keepalive>hold": {Neighbors: []Neighbor{{Addr: ma("10.255.0.1"), ASN: 2, HoldTime: 9 * time.Second, KeepAlive: 9 * time.Second}}},
		"fractional":     {Neighbors: []Neighbor{{Addr: ma("10.255.0.1"), ASN: 2, HoldTime: 9500 * time.Millisecond}}},
	} {
		if _, err := d.normalise(1); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := (Desired{Neighbors: []Neighbor{ok}}).normalise(1); err != nil {
		t.Errorf("valid desired: %v", err)
	}
	for name, c := range map[string]Config{
		"zero ASN":     {RouterID: ma("10.0.0.1")},
		"no router id": {ASN: 1},
		"v6 router id": {ASN: 1, RouterID: ma("2001:db8::1")},
		"bad port":     {ASN: 1, RouterID: ma("10.0.0.1"), ListenPort: -2},
		"long restart": {ASN: 1, RouterID: ma("10.0.0.1"), RestartTime: time.Hour + time.Second*1000},
	} {
		if err := c.validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("config %s: err = %v, want ErrInvalid", name, err)
		}
	}
}

func TestSameSession(t *testing.T) {
	a := Neighbor{Addr: ma("10.255.0.1"), ASN: 2, Description: "t1", Interface: "mw-a"}.normalised()
	b := a
	b.Description, b.Interface = "t1-renamed", "mw-b"
	if !sameSession(a, b) {
		t.Error("description/interface change must not re-create the session")
	}
	for name, f := range map[string]func(*Neighbor){
		"asn":     func(n *Neighbor) { n.ASN = 3 },
		"local":   func(n *Neighbor) { n.LocalAddr = ma("10.255.0.2") },
		"hold":    func(n *Neighbor) { n.HoldTime = 30 * time.Second },
		"lan":     func(n *Neighbor) { n.LAN = true },
		"passive": func(n *Neighbor) { n.Passive = true },
		"port":    func(n *Neighbor) { n.Port = 1179 },
	} {
		c := a
		f(&c)
		if sameSession(a, c) {
			t.Errorf("%s change must re-create the session", name)
		}
	}
	// Defaults compare equal to explicit defaults.
	if !sameSession(Neighbor{Addr: ma("10.255.0.1"), ASN: 2}.normalised(),
		Neighbor{Addr: ma("10.255.0.1"), ASN: 2, HoldTime: DefaultHoldTime, KeepAlive: DefaultKeepAlive}.normalised()) {
		t.Error("zero timers must equal the defaults")
	}
}

// TestPeerFor pins the GoBGP configuration a tunnel neighbor maps to.
func TestPeerFor(t *testing.T) {
	n := Neighbor{Addr: ma("10.255.0.1"), ASN: 4200000001, LocalAddr: ma("10.255.0.2"), Description: "t-a-inet"}.normalised()
	want := `neighbor 10.255.0.1 peer-as 4200000001 desc t-a-inet
timers hold 9 keepalive 3 connect-retry 5
transport local 10.255.0.2 remote-port 0 passive false
graceful-restart enabled true restart-time 120 deferral 60 notification false local-restarting false
afi-safi AFI_IP/SAFI_UNICAST enabled true mp-graceful-restart true`
	if s := peerText(peerFor(n, DefaultRestartTime, false)); s != want {
		t.Errorf("peerFor:\n%s\nwant:\n%s", s, want)
	}
	n2 := Neighbor{Addr: ma("192.0.2.9"), ASN: 64512, Passive: true, Port: 1179, LAN: true}.normalised()
	want2 := `neighbor 192.0.2.9 peer-as 64512 desc 
timers hold 9 keepalive 3 connect-retry 5
transport local  remote-port 1179 passive true
graceful-restart enabled true restart-time 30 deferral 60 notification false local-restarting true
afi-safi AFI_IP/SAFI_UNICAST enabled true mp-graceful-restart true`
	if s := peerText(peerFor(n2, 30*time.Second, true)); s != want2 {
		t.Errorf("peerFor (passive, restarting):\n%s\nwant:\n%s", s, want2)
	}

	g := globalFor(Config{ASN: 4200000002, RouterID: ma("10.2.1.1"), ListenPort: -1, ListenAddrs: []netip.Addr{ma("10.255.0.2")}})
	if g.Asn != 4200000002 || g.RouterId != "10.2.1.1" || g.ListenPort != -1 || !g.UseMultiplePaths ||
		fmt.Sprint(g.ListenAddresses) != "[10.255.0.2]" || fmt.Sprint(g.Families) != "[0]" {
		t.Errorf("globalFor = %v", g)
	}

	p, err := pathFor(mp("10.2.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := candidateFrom(p, 4200000002)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Local || c.NextHop.IsValid() || c.Origin != 0 {
		t.Errorf("our announcement reads back as %+v, want local, origin igp, no next hop", c)
	}
}

func desiredText(d Desired) string {
	var b strings.Builder
	for _, p := range d.Originate {
		fmt.Fprintf(&b, "originate %v\n", p)
	}
	for _, n := range d.Neighbors {
		fmt.Fprintf(&b, "neighbor %v as %d local %v port %d desc %s if %s hold %v keepalive %v lan %v passive %v\n",
			n.Addr, n.ASN, n.LocalAddr, n.Port, n.Description, n.Interface, n.HoldTime, n.KeepAlive, n.LAN, n.Passive)
	}
	return strings.TrimSpace(b.String())
}

func peerText(p *api.Peer) string {
	var b strings.Builder
	fmt.Fprintf(&b, "neighbor %s peer-as %d desc %s\n", p.Conf.NeighborAddress, p.Conf.PeerAsn, p.Conf.Description)
	tc := p.Timers.Config
	fmt.Fprintf(&b, "timers hold %d keepalive %d connect-retry %d\n", tc.HoldTime, tc.KeepaliveInterval, tc.ConnectRetry)
	fmt.Fprintf(&b, "transport local %s remote-port %d passive %v\n", p.Transport.LocalAddress, p.Transport.RemotePort, p.Transport.PassiveMode)
	gr := p.GracefulRestart
	fmt.Fprintf(&b, "graceful-restart enabled %v restart-time %d deferral %d notification %v local-restarting %v\n",
		gr.Enabled, gr.RestartTime, gr.DeferralTime, gr.NotificationEnabled, gr.LocalRestarting)
	for _, af := range p.AfiSafis {
		fmt.Fprintf(&b, "afi-safi %v/%v enabled %v mp-graceful-restart %v\n", af.Config.Family.Afi, af.Config.Family.Safi,
			af.Config.Enabled, af.MpGracefulRestart.Config.Enabled)
	}
	return strings.TrimSpace(b.String())
}

func mp(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ma(s string) netip.Addr   { return netip.MustParseAddr(s) }
