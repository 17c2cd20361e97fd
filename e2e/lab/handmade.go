package lab

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/dataplane/ipsec"
)

// HandMade describes a GRE + transport-mode ESP tunnel between two sites'
// first transports built without meshwan: the baseline the data-plane
// benchmark measures meshwan's tunnel against. Its IPsec connection is
// meshwan's own (ipsec.ConnMessage of the same dataplane.Tunnel shape, so
// the proposals, lifetimes and transport mode cannot drift apart), loaded
// into each site's own charon (StartCharon) over VICI; the GRE link has
// meshwan's parameters (ttl 64, path MTU discovery, no key, no IPv6
// link-local) and the MTU given. No firewall, no conntrack, no MSS clamp:
// the kernel as a hand-configured router would run it.
type HandMade struct {
	Link  string          // the GRE link's name on both ends
	MTU   int             // the GRE link's MTU
	Inner [2]netip.Prefix // a's and b's address on the tunnel /30
	// PSK authenticates the two charons. A fixed lab value, not a secret.
	PSK []byte
	// IPsec are the proposals and lifetimes (zero: meshwan's defaults).
	IPsec dataplane.IPsecPolicy
}

// HandMadeTunnel builds h between sites a and b (a initiates IKE) and
// routes each site's LAN to the other's through it. It starts the sites'
// charons if they are not running. The child SA comes up on the first
// GRE packet (trap) or on a's initiation, whichever is first; callers
// wait for traffic to pass (e.g. Ping) before measuring.
func (l *Lab) HandMadeTunnel(ctx context.Context, a, b string, h HandMade) error {
	ends := [2]*Site{l.Sites[a], l.Sites[b]}
	if ends[0] == nil || ends[1] == nil {
		return fmt.Errorf("hand-made tunnel: unknown site %q or %q", a, b)
	}
	for i, s := range ends {
		peer := ends[1-i]
		if s.charonStop == nil {
			if err := l.StartCharon(ctx, s.Name); err != nil {
				return err
			}
		}
		if err := batch(ctx, s.NS,
			fmt.Sprintf("link add %s type gre local %s remote %s ttl 64", h.Link, s.WAN, peer.WAN),
			fmt.Sprintf("link set %s mtu %d addrgenmode none", h.Link, h.MTU),
			fmt.Sprintf("addr add %s dev %s", h.Inner[i], h.Link),
			"link set "+h.Link+" up",
			fmt.Sprintf("route add %s via %s dev %s", peer.LAN, h.Inner[1-i].Addr(), h.Link),
		); err != nil {
			return err
		}
		t := dataplane.Tunnel{ID: "hm-" + a + "-" + b, LinkName: h.Link, LocalUnderlay: s.WAN, RemoteUnderlay: peer.WAN,
			PSK: h.PSK, IPsec: h.IPsec, Passive: i == 1}
		if err := loadConn(ctx, s.ViciSocket(), t); err != nil {
			return fmt.Errorf("hand-made tunnel, site %s: %w", s.Name, err)
		}
	}
	return nil
}

// loadConn loads t's secret and connection into the charon at socket.
func loadConn(ctx context.Context, socket string, t dataplane.Tunnel) error {
	conn, err := ipsec.ConnMessage(t)
	if err != nil {
		return err
	}
	secret, err := ipsec.SecretMessage(t)
	if err != nil {
		return err
	}
	sess, err := ipsec.Dial(ctx, socket)
	if err != nil {
		return err
	}
	defer sess.Close()
	if _, err := sess.Call(ctx, "load-shared", secret); err != nil {
		return fmt.Errorf("load-shared: %w", err)
	}
	if _, err := sess.Call(ctx, "load-conn", conn); err != nil {
		return fmt.Errorf("load-conn: %w", err)
	}
	return nil
}

// SetGRO turns generic receive offload of a link in a site's namespace on
// or off (ethtool -K) and returns the state the kernel reports after.
func (l *Lab) SetGRO(ctx context.Context, site, link string, on bool) (bool, error) {
	state := "off"
	if on {
		state = "on"
	}
	if _, err := Run(ctx, "ip", "netns", "exec", l.Sites[site].NS, "ethtool", "-K", link, "gro", state); err != nil {
		return false, err
	}
	return l.GRO(ctx, site, link)
}

// GRO reports whether generic receive offload is on for a link in a
// site's namespace (ethtool -k).
func (l *Lab) GRO(ctx context.Context, site, link string) (bool, error) {
	out, err := Run(ctx, "ip", "netns", "exec", l.Sites[site].NS, "ethtool", "-k", link)
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "generic-receive-offload:"); ok {
			return strings.HasPrefix(strings.TrimSpace(v), "on"), nil
		}
	}
	return false, fmt.Errorf("ethtool -k %s: no generic-receive-offload line", link)
}

// LinkMTU returns a link's MTU in a site's namespace.
func (l *Lab) LinkMTU(ctx context.Context, site, link string) (int, error) {
	out, err := Run(ctx, "ip", "-n", l.Sites[site].NS, "-o", "link", "show", "dev", link)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "mtu" {
			var mtu int
			if _, err := fmt.Sscan(f[i+1], &mtu); err != nil {
				return 0, fmt.Errorf("link %s mtu %q: %w", link, f[i+1], err)
			}
			return mtu, nil
		}
	}
	return 0, fmt.Errorf("link %s: no mtu in %q", link, out)
}
