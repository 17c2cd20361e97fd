package ipsec

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/strongswan/govici/vici"
)

// NamePrefix starts every connection and shared-secret name meshwan loads
// into charon. Only names with it are ever unloaded.
const NamePrefix = "mw-"

// ChildName is the one CHILD_SA of every connection: ESP in transport
// mode on the GRE packets between the two underlay addresses.
const ChildName = "gre"

// ConnName is the IKE connection name of a tunnel, also its secret id.
func ConnName(tunnelID string) string { return NamePrefix + tunnelID }

// DefaultPolicy fills the zero fields of a tunnel's IPsecPolicy: the seed's
// lifetimes (IKE 28800 s, ESP 3600 s), DH group 14 (modp2048) as in the
// seed for IKE and, as PFS, for every CHILD_SA rekey (the seed's
// "esp-policy ... 14"; third-party peers often require PFS and a rekey
// without a group then fails), AES-GCM for ESP (cheaper than the seed's
// AES-CBC + SHA, and what dataplane.ESPAESGCM16 sizes the MTU for: the DH
// group adds no ESP overhead), and 30 s dead peer detection. It must equal
// controller/intent's defaults (TestDefaultsMatchController).
var DefaultPolicy = dataplane.IPsecPolicy{
	IKEProposal: "aes256-sha256-modp2048",
	IKELifetime: 8 * time.Hour,
	ESPProposal: "aes256gcm16-modp2048",
	ESPLifetime: time.Hour,
	DPDInterval: 30 * time.Second,
}

func withDefaults(p dataplane.IPsecPolicy) dataplane.IPsecPolicy {
	if p.IKEProposal == "" {
		p.IKEProposal = DefaultPolicy.IKEProposal
	}
	if p.IKELifetime == 0 {
		p.IKELifetime = DefaultPolicy.IKELifetime
	}
	if p.ESPProposal == "" {
		p.ESPProposal = DefaultPolicy.ESPProposal
	}
	if p.ESPLifetime == 0 {
		p.ESPLifetime = DefaultPolicy.ESPLifetime
	}
	if p.DPDInterval == 0 {
		p.DPDInterval = DefaultPolicy.DPDInterval
	}
	return p
}

func secs(d time.Duration) string { return strconv.FormatInt(int64(d/time.Second), 10) + "s" }

// ConnMessage builds the load-conn request for t: { "mw-<id>": { ... } }.
//
// Choices, each for a reason:
//   - IKEv2, PSK both ways, identities = underlay addresses (what a
//     third-party peer configured by hand expects, seed style);
//   - rekey_time = IKE lifetime, over_time and rand_time 10% of it: the two
//     ends do not rekey at the same instant, and an SA lives at most 110%;
//     no reauthentication (a PSK does not expire; a changed PSK is used
//     from the next IKE_SA on);
//   - keyingtries 0: keep trying forever, the peer may come up much later;
//   - mobike and encap off: fixed public endpoints, and transport mode on
//     GRE does not survive an address change anyway;
//   - child: transport mode, traffic selectors dynamic[gre] (only GRE
//     between the two underlay addresses is protected);
//   - start_action trap|start (strongSwan >= 5.9.6): install trap
//     policies so GRE traffic triggers negotiation, and initiate at once;
//   - on a Passive end: start_action trap and dpd_action trap, so only the
//     active end initiates (two ends starting at once create duplicate
//     SAs); the passive end's own GRE traffic still brings a tunnel up;
//   - dpd_action restart: a dead peer's SA is re-initiated at once;
//   - close_action trap: when the peer closes the CHILD_SA, go back to
//     traps rather than initiating immediately, so two ends that both
//     close do not fight; the next GRE packet (BGP keepalives, probes)
//     brings it back.
func ConnMessage(t dataplane.Tunnel) (*vici.Message, error) {
	p := withDefaults(t.IPsec)
	local, remote := t.LocalUnderlay.String(), t.RemoteUnderlay.String()
	start, dpd := "trap|start", "restart"
	if t.Passive {
		start, dpd = "trap", "trap"
	}
	b := &builder{}
	child := b.section(
		"mode", "transport",
		"local_ts", []string{"dynamic[gre]"},
		"remote_ts", []string{"dynamic[gre]"},
		"esp_proposals", splitProposals(p.ESPProposal),
		"rekey_time", secs(p.ESPLifetime),
		"life_time", secs(p.ESPLifetime+p.ESPLifetime/10),
		"rand_time", secs(p.ESPLifetime/10),
		"start_action", start,
		"dpd_action", dpd,
		"close_action", "trap",
	)
	conn := b.section(
		"version", "2",
		"local_addrs", []string{local},
		"remote_addrs", []string{remote},
		"proposals", splitProposals(p.IKEProposal),
		"rekey_time", secs(p.IKELifetime),
		"over_time", secs(p.IKELifetime/10),
		"rand_time", secs(p.IKELifetime/10),
		"dpd_delay", secs(p.DPDInterval),
		"keyingtries", "0",
		"mobike", "no",
		"encap", "no",
		"send_certreq", "no",
		"local", b.section("auth", "psk", "id", local),
		"remote", b.section("auth", "psk", "id", remote),
		"children", b.section(ChildName, child),
	)
	msg := b.section(ConnName(t.ID), conn)
	if b.err != nil {
		return nil, fmt.Errorf("build connection %s: %w", ConnName(t.ID), b.err)
	}
	return msg, nil
}

// SecretMessage builds the load-shared request for t's PSK: an IKE secret
// with id "mw-<id>", owned by both underlay identities. data carries the
// raw key bytes (a VICI value is a byte string; swanctl sends the decoded
// bytes of a "0x..." secret the same way), so a third-party peer must be
// given the same 32 bytes, e.g. as swanctl `secret = 0x<hex>`. The result
// holds the key: never log it or its String().
func SecretMessage(t dataplane.Tunnel) (*vici.Message, error) {
	b := &builder{}
	msg := b.section(
		"id", ConnName(t.ID),
		"type", "IKE",
		"data", string(t.PSK),
		"owners", []string{t.LocalUnderlay.String(), t.RemoteUnderlay.String()},
	)
	if b.err != nil {
		return nil, fmt.Errorf("build secret %s: %w", ConnName(t.ID), b.err)
	}
	return msg, nil
}

// AcceptSecretID names an accept-only key of a tunnel:
// "mw-<id>#<12 hex digits of the key's SHA-256>". The id follows the key,
// so a key set change is a diff of ids (load the new ones, unload the
// gone) with no moment where a key still in use is missing, and an agent
// restart finds the same ids. A truncated hash of a 256-bit random key
// reveals nothing usable about it, and only root can list the ids.
func AcceptSecretID(tunnelID string, key []byte) string {
	h := sha256.New()
	h.Write([]byte("meshwan accept psk\x00"))
	h.Write(key)
	return ConnName(tunnelID) + "#" + hex.EncodeToString(h.Sum(nil)[:6])
}

// AcceptSecretMessage builds the load-shared request for an accept-only
// key: owned by the REMOTE identity only. charon's credential manager
// picks the best-matching secret to build our AUTH payload (the primary
// one, owned by both identities, matches both perfectly: we always sign
// with the PSK), while verifying the peer's AUTH tries every secret that
// matches either identity (libcharon psk_authenticator.c process()
// enumerates create_shared_enumerator), so the peer may use this key or
// the primary one. The result holds the key: never log it.
func AcceptSecretMessage(t dataplane.Tunnel, key []byte) (*vici.Message, error) {
	b := &builder{}
	id := AcceptSecretID(t.ID, key)
	msg := b.section(
		"id", id,
		"type", "IKE",
		"data", string(key),
		"owners", []string{t.RemoteUnderlay.String()},
	)
	if b.err != nil {
		return nil, fmt.Errorf("build secret %s: %w", id, b.err)
	}
	return msg, nil
}

// splitProposals accepts "a,b" as two proposals.
func splitProposals(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// builder makes ordered VICI sections and keeps the first error.
type builder struct{ err error }

func (b *builder) section(kv ...any) *vici.Message {
	m := vici.NewMessage()
	for i := 0; i+1 < len(kv); i += 2 {
		if err := m.Set(kv[i].(string), kv[i+1]); err != nil && b.err == nil {
			b.err = fmt.Errorf("%s: %w", kv[i], err)
		}
	}
	return m
}

// observedConn is what list-conns shows of one connection.
type observedConn struct {
	localAddrs, remoteAddrs []string
	children                []string
}

// parseConns reads list-conn events: one message per connection,
// { <name>: { local_addrs, remote_addrs, ..., children { <child> {...} } } }.
func parseConns(msgs []*vici.Message) map[string]observedConn {
	out := map[string]observedConn{}
	for _, m := range msgs {
		for _, name := range m.Keys() {
			sec, ok := m.Get(name).(*vici.Message)
			if !ok {
				continue
			}
			c := observedConn{localAddrs: strs(sec.Get("local_addrs")), remoteAddrs: strs(sec.Get("remote_addrs"))}
			if ch, ok := sec.Get("children").(*vici.Message); ok {
				c.children = ch.Keys()
			}
			out[name] = c
		}
	}
	return out
}

// matches reports whether the loaded connection has t's endpoints and our
// child. Proposals, lifetimes and the PSK are not listed by charon; the
// Manager's fingerprints cover them.
func (c observedConn) matches(t dataplane.Tunnel) bool {
	return len(c.localAddrs) == 1 && c.localAddrs[0] == t.LocalUnderlay.String() &&
		len(c.remoteAddrs) == 1 && c.remoteAddrs[0] == t.RemoteUnderlay.String() &&
		len(c.children) == 1 && c.children[0] == ChildName
}

// ikeSA and childSA are what list-sas shows.
type ikeSA struct {
	id       string // uniqueid
	state    string
	children []childSA
}

type childSA struct {
	name, state                              string
	bytesIn, bytesOut, packetsIn, packetsOut uint64
}

// parseSAs reads list-sa events: { <ike name>: { state, ..., child-sas {
// <child>-<id>: { name, state, bytes-in, ... } } } }, grouped by name
// (one connection can have several IKE_SAs, e.g. after a collision).
func parseSAs(msgs []*vici.Message) map[string][]ikeSA {
	out := map[string][]ikeSA{}
	for _, m := range msgs {
		for _, name := range m.Keys() {
			sec, ok := m.Get(name).(*vici.Message)
			if !ok {
				continue
			}
			sa := ikeSA{id: str(sec.Get("uniqueid")), state: str(sec.Get("state"))}
			if cs, ok := sec.Get("child-sas").(*vici.Message); ok {
				for _, k := range cs.Keys() {
					c, ok := cs.Get(k).(*vici.Message)
					if !ok {
						continue
					}
					sa.children = append(sa.children, childSA{
						name: str(c.Get("name")), state: str(c.Get("state")),
						bytesIn: num(c.Get("bytes-in")), bytesOut: num(c.Get("bytes-out")),
						packetsIn: num(c.Get("packets-in")), packetsOut: num(c.Get("packets-out")),
					})
				}
			}
			out[name] = append(out[name], sa)
		}
	}
	return out
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func strs(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []string:
		return v
	}
	return nil
}

func num(v any) uint64 {
	n, _ := strconv.ParseUint(str(v), 10, 64)
	return n
}
