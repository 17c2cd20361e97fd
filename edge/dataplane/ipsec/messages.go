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

// The VICI messages meshwan sends and reads, as Go structs marshalled by
// govici (vici.MarshalMessage, vici.UnmarshalMessage). A field's vici tag
// is its key on the wire, the field order is the message's key order, and
// govici leaves out empty strings and lists (never numbers or bools: an
// int is sent as its decimal string, a bool as "yes"/"no").
// Durations are strings ("28800s"): govici would send an integer without
// the unit. testdata/messages/*.golden hold the messages as the untyped
// builder these structs replaced produced them (TestMessagesGolden).

// connConfig is one connection of a load-conn request.
type connConfig struct {
	Version     int                    `vici:"version"`
	LocalAddrs  []string               `vici:"local_addrs"`
	RemoteAddrs []string               `vici:"remote_addrs"`
	Proposals   []string               `vici:"proposals"`
	RekeyTime   string                 `vici:"rekey_time"`
	OverTime    string                 `vici:"over_time"`
	RandTime    string                 `vici:"rand_time"`
	DPDDelay    string                 `vici:"dpd_delay"`
	KeyingTries int                    `vici:"keyingtries"`
	Mobike      bool                   `vici:"mobike"`
	Encap       bool                   `vici:"encap"`
	SendCertreq bool                   `vici:"send_certreq"`
	Local       authConfig             `vici:"local"`
	Remote      authConfig             `vici:"remote"`
	Children    map[string]childConfig `vici:"children"`
}

// authConfig is a local or remote authentication round.
type authConfig struct {
	Auth string `vici:"auth"`
	ID   string `vici:"id"`
}

// childConfig is a CHILD_SA configuration.
type childConfig struct {
	Mode         string   `vici:"mode"`
	LocalTS      []string `vici:"local_ts"`
	RemoteTS     []string `vici:"remote_ts"`
	ESPProposals []string `vici:"esp_proposals"`
	RekeyTime    string   `vici:"rekey_time"`
	LifeTime     string   `vici:"life_time"`
	RandTime     string   `vici:"rand_time"`
	StartAction  string   `vici:"start_action"`
	DPDAction    string   `vici:"dpd_action"`
	CloseAction  string   `vici:"close_action"`
}

// sharedSecret is a load-shared request. Data holds the key: a value of
// this type is never logged.
type sharedSecret struct {
	ID     string   `vici:"id"`
	Type   string   `vici:"type"`
	Data   string   `vici:"data"`
	Owners []string `vici:"owners"`
}

// unloadConn and unloadShared are the unload-conn and unload-shared requests.
type unloadConn struct {
	Name string `vici:"name"`
}

type unloadShared struct {
	ID string `vici:"id"`
}

// initiateRequest is an initiate request; Timeout in ms, -1: do not wait.
type initiateRequest struct {
	Child    string `vici:"child"`
	IKE      string `vici:"ike"`
	Timeout  int64  `vici:"timeout"`
	LogLevel int    `vici:"loglevel"`
}

// terminateRequest is a terminate request of a connection's IKE_SAs, or
// of one IKE_SA by its unique id (empty strings are left out of the
// message).
type terminateRequest struct {
	IKE      string `vici:"ike"`
	IKEID    string `vici:"ike-id"`
	Force    bool   `vici:"force"`
	Timeout  int    `vici:"timeout"`
	LogLevel int    `vici:"loglevel"`
}

// rekeyRequest is a rekey request of an IKE_SA (Reauth: re-authenticate).
type rekeyRequest struct {
	IKE    string `vici:"ike"`
	Reauth bool   `vici:"reauth"`
}

// sharedKeys is the get-shared answer.
type sharedKeys struct {
	Keys []string `vici:"keys"`
}

// listedConn is one connection of a list-conn event, { <name>: {...} }:
// only what the Manager reads.
type listedConn struct {
	LocalAddrs  []string            `vici:"local_addrs"`
	RemoteAddrs []string            `vici:"remote_addrs"`
	Children    map[string]struct{} `vici:"children"`
}

// listedIKE is one IKE_SA of a list-sa event, { <conn name>: {...} };
// child-sas are keyed "<child>-<unique id>".
type listedIKE struct {
	UniqueID string                 `vici:"uniqueid"`
	State    IKEState               `vici:"state"`
	Children map[string]listedChild `vici:"child-sas"`
}

// listedChild is one CHILD_SA of a list-sa event. The counters are only
// present while the SA is installed (or rekeying).
type listedChild struct {
	Name       string     `vici:"name"`
	State      ChildState `vici:"state"`
	BytesIn    uint64     `vici:"bytes-in"`
	BytesOut   uint64     `vici:"bytes-out"`
	PacketsIn  uint64     `vici:"packets-in"`
	PacketsOut uint64     `vici:"packets-out"`
}

// marshal turns a request struct into a message, naming what for errors
// (never the payload: a secret's holds the key).
func marshal(what string, v any) (*vici.Message, error) {
	m, err := vici.MarshalMessage(v)
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", what, err)
	}
	return m, nil
}

// connConfigOf is the connection meshwan loads for t.
//
// Choices, each for a reason:
//   - IKEv2, PSK both ways, identities = underlay addresses (what a
//     third-party peer configured by hand expects, seed style); behind NAT
//     the local identity is the public address the peer knows
//     (Tunnel.LocalIdentity), not the interface's address charon sends
//     from (dataplane.Localize);
//   - rekey_time = IKE lifetime, over_time and rand_time 10% of it: the two
//     ends do not rekey at the same instant, and an SA lives at most 110%;
//     no reauthentication (a PSK does not expire; a changed PSK is used
//     from the next IKE_SA on);
//   - keyingtries 0: keep trying forever, the peer may come up much later;
//   - mobike and encap off: fixed public endpoints, and transport mode on
//     GRE does not survive an address change anyway; encap off only means
//     "do not force UDP encapsulation": charon still detects a NAT and
//     then runs IKE and ESP over UDP 4500 (NAT-T, docs/nat.md);
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
func connConfigOf(t dataplane.Tunnel) connConfig {
	p := withDefaults(t.IPsec)
	local, remote := t.LocalUnderlay.String(), t.RemoteUnderlay.String()
	start, dpd := "trap|start", "restart"
	if t.Passive {
		start, dpd = "trap", "trap"
	}
	return connConfig{
		Version:     2,
		LocalAddrs:  []string{local},
		RemoteAddrs: []string{remote},
		Proposals:   splitProposals(p.IKEProposal),
		RekeyTime:   secs(p.IKELifetime),
		OverTime:    secs(p.IKELifetime / 10),
		RandTime:    secs(p.IKELifetime / 10),
		DPDDelay:    secs(p.DPDInterval),
		KeyingTries: 0,
		Mobike:      false,
		Encap:       false,
		SendCertreq: false,
		Local:       authConfig{Auth: "psk", ID: t.LocalIdentity().String()},
		Remote:      authConfig{Auth: "psk", ID: remote},
		Children: map[string]childConfig{ChildName: {
			Mode:         "transport",
			LocalTS:      []string{"dynamic[gre]"},
			RemoteTS:     []string{"dynamic[gre]"},
			ESPProposals: splitProposals(p.ESPProposal),
			RekeyTime:    secs(p.ESPLifetime),
			LifeTime:     secs(p.ESPLifetime + p.ESPLifetime/10),
			RandTime:     secs(p.ESPLifetime / 10),
			StartAction:  start,
			DPDAction:    dpd,
			CloseAction:  "trap",
		}},
	}
}

// ConnMessage builds the load-conn request for t: { "mw-<id>": { ... } }
// (see connConfigOf for the choices).
func ConnMessage(t dataplane.Tunnel) (*vici.Message, error) {
	return marshal("connection "+ConnName(t.ID), map[string]connConfig{ConnName(t.ID): connConfigOf(t)})
}

// secretOf is the primary key of t: an IKE secret with id "mw-<id>",
// owned by both IKE identities (LocalIdentity and the remote underlay). Data carries the raw key bytes (a
// VICI value is a byte string; swanctl sends the decoded bytes of a
// "0x..." secret the same way), so a third-party peer must be given the
// same 32 bytes, e.g. as swanctl `secret = 0x<hex>`.
func secretOf(t dataplane.Tunnel) sharedSecret {
	return sharedSecret{ID: ConnName(t.ID), Type: "IKE", Data: string(t.PSK),
		Owners: []string{t.LocalIdentity().String(), t.RemoteUnderlay.String()}}
}

// SecretMessage builds the load-shared request for t's PSK (see
// secretOf). The result holds the key: never log it or its String().
func SecretMessage(t dataplane.Tunnel) (*vici.Message, error) {
	return marshal("secret "+ConnName(t.ID), secretOf(t))
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
	id := AcceptSecretID(t.ID, key)
	return marshal("secret "+id, sharedSecret{ID: id, Type: "IKE", Data: string(key), Owners: []string{t.RemoteUnderlay.String()}})
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

// observedConn is what list-conns shows of one connection.
type observedConn struct {
	localAddrs, remoteAddrs []string
	children                []string
}

// parseConns reads list-conn events: one message per connection,
// { <name>: { local_addrs, remote_addrs, ..., children { <child> {...} } } }.
func parseConns(msgs []*vici.Message) (map[string]observedConn, error) {
	out := map[string]observedConn{}
	for _, m := range msgs {
		conns := map[string]listedConn{}
		if err := vici.UnmarshalMessage(m, conns); err != nil {
			return nil, fmt.Errorf("parse list-conn event: %w", err)
		}
		for name, c := range conns {
			out[name] = observedConn{localAddrs: c.LocalAddrs, remoteAddrs: c.RemoteAddrs, children: sortedKeys(c.Children)}
		}
	}
	return out, nil
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
	state    IKEState
	children []childSA
}

type childSA struct {
	name                                     string
	state                                    ChildState
	bytesIn, bytesOut, packetsIn, packetsOut uint64
}

// parseSAs reads list-sa events: { <ike name>: { state, ..., child-sas {
// <child>-<id>: { name, state, bytes-in, ... } } } }, grouped by name
// (one connection can have several IKE_SAs, e.g. after a collision). The
// CHILD_SAs of an IKE_SA are sorted by their key (charon's order is not
// kept by the map govici fills; nothing depends on it).
func parseSAs(msgs []*vici.Message) (map[string][]ikeSA, error) {
	out := map[string][]ikeSA{}
	for _, m := range msgs {
		sas := map[string]listedIKE{}
		if err := vici.UnmarshalMessage(m, sas); err != nil {
			return nil, fmt.Errorf("parse list-sa event: %w", err)
		}
		for _, name := range sortedKeys(sas) {
			l := sas[name]
			sa := ikeSA{id: l.UniqueID, state: l.State}
			for _, k := range sortedKeys(l.Children) {
				c := l.Children[k]
				sa.children = append(sa.children, childSA{name: c.Name, state: c.State,
					bytesIn: c.BytesIn, bytesOut: c.BytesOut, packetsIn: c.PacketsIn, packetsOut: c.PacketsOut})
			}
			out[name] = append(out[name], sa)
		}
	}
	return out, nil
}
