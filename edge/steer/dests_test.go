package steer

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/meshwan/meshwan/edge/dataplane"
)

func TestDestsFromDesired(t *testing.T) {
	d := dataplane.Desired{Tunnels: []dataplane.Tunnel{
		{ID: "t2", RemoteLANs: []netip.Prefix{pfx("10.1.0.0/16"), pfx("10.7.1.9/24")}},
		{ID: "t1", RemoteLANs: []netip.Prefix{pfx("10.1.0.0/16"), pfx("fd00::/64"), pfx("10.1.0.0/16")}},
		{ID: "t3", RemoteLANs: []netip.Prefix{pfx("10.0.0.0/8")}},
		{ID: "t4"},
	}}
	got := fmt.Sprint(DestsFromDesired(d))
	// Sorted by address then length; a prefix listed by several tunnels
	// (or twice by one) has each once; masked; IPv6 dropped.
	want := "[{10.0.0.0/8 [t3]} {10.1.0.0/16 [t1 t2]} {10.7.1.0/24 [t2]}]"
	if got != want {
		t.Errorf("DestsFromDesired = %s\nwant %s", got, want)
	}
	// A prefix covering a tunnel's /30 is never a steering destination.
	d.Tunnels[3].LocalInner = pfx("10.255.0.1/30")
	d.Tunnels[2].RemoteLANs = append(d.Tunnels[2].RemoteLANs, pfx("10.255.0.0/16"), pfx("10.255.0.4/30"))
	if got, want := fmt.Sprint(DestsFromDesired(d)), "[{10.1.0.0/16 [t1 t2]} {10.7.1.0/24 [t2]} {10.255.0.4/30 [t3]}]"; got != want {
		t.Errorf("with a tunnel /30 = %s\nwant %s", got, want)
	}
	if got := DestsFromDesired(dataplane.Desired{}); len(got) != 0 {
		t.Errorf("no tunnels: %v", got)
	}
}

func TestDestsFromNextHops(t *testing.T) {
	d := world()
	got := fmt.Sprint(DestsFromNextHops(d, map[netip.Prefix][]netip.Addr{
		pfx("10.1.0.0/16"):  {netip.MustParseAddr("10.255.0.6"), netip.MustParseAddr("10.255.0.2")},
		pfx("10.50.0.0/16"): {netip.MustParseAddr("10.255.0.14"), netip.MustParseAddr("::ffff:10.255.0.18")},
		pfx("10.99.0.0/16"): {netip.MustParseAddr("192.0.2.1")}, // no tunnel's inner address
	}))
	want := "[{10.1.0.0/16 [t1 t2]} {10.50.0.0/16 [t4 t5]}]"
	if got != want {
		t.Errorf("DestsFromNextHops = %s\nwant %s", got, want)
	}
}
