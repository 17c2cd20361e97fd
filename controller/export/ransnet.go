package export

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/meshwan/meshwan/controller/intent"
)

// RansNet file names.
const (
	FileMbox      = "mbox.cli"
	FileMboxNotes = "mbox-notes.txt"
)

// The mbox policy keywords, from the seed recipe ("policy AES SHA 14"):
// encryption, integrity, DH group. The seed shows AES (AES-128 in CBC
// mode), SHA (HMAC-SHA1) and 14 (the IANA number of modp2048). The other
// rows follow the same pattern (the IANA group number; the algorithm's
// name with its key or digest size) but the seed does not show them: check
// them against the mbox firmware's help before relying on them.
var (
	mboxCipher = map[string]string{"aes128": "AES", "aes": "AES", "aes192": "AES192", "aes256": "AES256"}
	mboxInteg  = map[string]string{"sha1": "SHA", "sha": "SHA", "sha256": "SHA256", "sha2_256": "SHA256", "sha384": "SHA384", "sha2_384": "SHA384", "sha512": "SHA512", "sha2_512": "SHA512"}
	mboxGroup  = map[string]string{"modp2048": "14", "modp3072": "15", "modp4096": "16", "modp6144": "17", "modp8192": "18", "ecp256": "19", "ecp384": "20", "ecp521": "21"}
)

// MboxPolicy maps one strongSwan proposal (meshwan's syntax, as the
// topology holds it) to the mbox's "ENC INTEG GROUP" words. The mbox takes
// exactly one algorithm of each kind, with a DH group (for ESP, that is
// PFS): several proposals, AEAD ciphers (aes*gcm*, which have no separate
// integrity), a separate PRF, a missing group, or an algorithm outside the
// table are refused, naming the keyword.
func MboxPolicy(field, proposal string) (string, error) {
	if strings.Contains(proposal, ",") {
		return "", fmt.Errorf("%w: %s: %q lists several proposals; the mbox takes one (ENC INTEG GROUP)", ErrInvalid, field, proposal)
	}
	var enc, integ, group string
	for _, k := range strings.Split(strings.ToLower(strings.TrimSpace(proposal)), "-") {
		switch {
		case mboxCipher[k] != "" && enc == "":
			enc = mboxCipher[k]
		case mboxInteg[k] != "" && integ == "":
			integ = mboxInteg[k]
		case mboxGroup[k] != "" && group == "":
			group = mboxGroup[k]
		case strings.Contains(k, "gcm") || strings.Contains(k, "ccm") || strings.HasPrefix(k, "chacha"):
			return "", fmt.Errorf("%w: %s: %q is an AEAD cipher, which the mbox policy (ENC INTEG GROUP) cannot express; use e.g. aes256-sha256-modp2048", ErrInvalid, field, k)
		case strings.HasPrefix(k, "prf"):
			return "", fmt.Errorf("%w: %s: %q: the mbox policy has no separate PRF; drop it (the PRF then follows the integrity algorithm)", ErrInvalid, field, k)
		default:
			return "", fmt.Errorf("%w: %s: %q has no mbox keyword (encryption aes128|aes192|aes256, integrity sha1|sha256|sha384|sha512, group modp2048-modp8192|ecp256|ecp384|ecp521, one of each)", ErrInvalid, field, k)
		}
	}
	switch {
	case enc == "":
		return "", fmt.Errorf("%w: %s: %q names no encryption algorithm the mbox knows", ErrInvalid, field, proposal)
	case integ == "":
		return "", fmt.Errorf("%w: %s: %q names no integrity algorithm; the mbox policy needs one", ErrInvalid, field, proposal)
	case group == "":
		return "", fmt.Errorf("%w: %s: %q names no DH group; the mbox policy needs one (for ESP: PFS, as the seed's \"esp-policy 10 policy AES SHA 14\")", ErrInvalid, field, proposal)
	}
	return enc + " " + integ + " " + group, nil
}

// mboxSNATFirst is the number of the first tunnel's SNAT exemption (the
// seed's "firewall-snat 08 exempt"); further tunnels count down, so every
// exemption comes before the seed's "firewall-snat 10 overload".
const mboxSNATFirst = 8

// mboxAccessFirst is the number of the first tunnel permit (the seed's
// "firewall-access 11 permit outbound tun0"); the seed's rule 10 is the
// site's own "permit outbound eth0".
const mboxAccessFirst = 11

// mboxWAN names the mbox port of the site's i-th transport: eth0 for the
// first (the seed's WAN), then eth1... The operator adjusts it to the box's
// cabling (the notes file says which transport is which).
func mboxWAN(s intent.Site, transport string) string {
	for i, t := range s.Transports {
		if t.Name == transport {
			return fmt.Sprintf("eth%d", i)
		}
	}
	return "eth0"
}

// mboxPSK renders a key for "psk": as itself when it is printable ASCII
// without spaces or quotes, otherwise as 0x and hex (strongSwan's form;
// the notes file says the mbox must accept it).
func mboxPSK(k []byte) (string, bool) {
	for _, c := range k {
		if c <= ' ' || c > '~' || c == '"' || c == '\'' || c == '!' {
			return fmt.Sprintf("0x%x", k), false
		}
	}
	return string(k), true
}

func renderRansNet(in Input) ([]File, error) {
	if in.Topology.Routing != intent.RoutingStatic {
		return nil, fmt.Errorf("%w: topology.routing: %q; the mbox recipe routes statically (ip route ... nexthop) and its BGP syntax is not part of this export: use the linux format, or static routing", ErrInvalid, in.Topology.Routing)
	}
	ike, err := MboxPolicy("topology.ipsec.ike_proposal", in.Topology.IPsec.IKEProposal)
	if err != nil {
		return nil, err
	}
	esp, err := MboxPolicy("topology.ipsec.esp_proposal", in.Topology.IPsec.ESPProposal)
	if err != nil {
		return nil, err
	}
	if n := len(in.Tunnels); n > mboxSNATFirst {
		return nil, fmt.Errorf("%w: site %q has %d tunnels; the recipe's numbering leaves %d SNAT exemptions (firewall-snat 01-08) before its overload rule 10", ErrInvalid, in.Site.Name, n, mboxSNATFirst)
	}
	peers := map[netip.Addr]string{}
	for _, t := range in.Tunnels {
		if other, dup := peers[t.RemoteUnderlay]; dup {
			return nil, fmt.Errorf("%w: tunnels %s and %s both lead to %s; the mbox keys an ipsec peer by its address (use transport_match same-name)", ErrInvalid, other, t.ID, t.RemoteUnderlay)
		}
		peers[t.RemoteUnderlay] = t.ID
	}

	var b, notes strings.Builder
	notes.WriteString(header("#", in, "Notes on the RansNet mbox configuration ("+FileMbox+", which holds pre-shared keys: keep it secret)", false))
	notes.WriteString("#\n# Enter mbox.cli on the box in the order given. It holds only the tunnels' part;\n")
	notes.WriteString("# keep the box's own interface, default-gateway and \"firewall-snat 10 overload\" lines.\n#\n")
	fmt.Fprintf(&notes, "# IKE policy %q -> %q, ESP policy %q -> %q (ENC INTEG GROUP).\n",
		in.Topology.IPsec.IKEProposal, ike, in.Topology.IPsec.ESPProposal, esp)
	notes.WriteString("# Dead peer detection and rekey margins are the mbox's own; the meshwan ends run DPD.\n")
	for i, t := range in.Tunnels {
		fmt.Fprintf(&notes, "# tun%d: tunnel %s to site %s; transport %s is %s here (adjust to the box's WAN port).\n",
			i, t.ID, t.RemoteSite, t.LocalTransport, mboxWAN(in.Site, t.LocalTransport))
		if _, ok := mboxPSK(t.PSK); !ok {
			fmt.Fprintf(&notes, "# tun%d: the pre-shared key is binary and written as 0x<hex>; if the mbox takes it as text, rotate the key or use the linux format.\n", i)
		}
	}
	notes.WriteString("# local-net/remote-net are the two WAN addresses: meshwan protects the GRE packets between\n")
	notes.WriteString("# them (ESP transport mode, GRE only); the tunnels' inner addresses would not match the\n# meshwan end's traffic selectors.\n")

	for i, t := range in.Tunnels {
		fmt.Fprintf(&b, "interface tun%d\n", i)
		fmt.Fprintf(&b, "  tunnel local %s remote %s\n", t.LocalUnderlay, t.RemoteUnderlay)
		fmt.Fprintf(&b, "  enable\n  mtu %d\n  ip address %s\n!\n", in.Topology.MTU, t.LocalInner)
	}
	// One route per prefix, via the first tunnel (id order) that carries
	// it: the recipe's static routes have no metric for a backup.
	routed := map[netip.Prefix]bool{}
	for _, r := range routes(in) {
		if routed[r.prefix] {
			continue
		}
		routed[r.prefix] = true
		fmt.Fprintf(&b, "ip route %s nexthop %s\n", r.prefix, r.via)
	}
	b.WriteString("!\n")
	n := mboxAccessFirst
	for i := range in.Tunnels {
		for _, lan := range in.Site.LANPrefixes {
			fmt.Fprintf(&b, "firewall-access %d permit outbound tun%d src %s\n", n, i, lan)
			n++
		}
	}
	b.WriteString("!\n")
	for i, t := range in.Tunnels {
		fmt.Fprintf(&b, "firewall-snat %02d exempt outbound %s src %s remark \"bypass SNAT for tunnel traffic\"\n", mboxSNATFirst-i, mboxWAN(in.Site, t.LocalTransport), t.LocalInner.Masked())
	}
	b.WriteString("!\n")
	fmt.Fprintf(&b, "ipsec ike-policy 10 authentication psk policy %s keylife %d version 2\n!\n", ike, int64(in.Topology.IPsec.IKELifetime/time.Second))
	fmt.Fprintf(&b, "ipsec esp-policy 10 policy %s keylife %d\n!\n", esp, int64(in.Topology.IPsec.ESPLifetime/time.Second))
	for _, t := range in.Tunnels {
		psk, _ := mboxPSK(t.PSK)
		fmt.Fprintf(&b, "ipsec peer %s\n", t.RemoteUnderlay)
		fmt.Fprintf(&b, "  local ip %s\n  local-net %s\n  remote-net %s\n", t.LocalUnderlay, t.LocalUnderlay, t.RemoteUnderlay)
		fmt.Fprintf(&b, "  policy ike 10 esp 10\n  psk %s\n!\n", psk)
	}
	b.WriteString("ipsec start\n!\n")
	return []File{{FileMbox, b.String()}, {FileMboxNotes, notes.String()}}, nil
}
