package ipsec

// legacy_test.go keeps the untyped builder the typed messages replaced,
// only until TestTypedMessagesEqualLegacy has recorded its output as
// golden files (testdata/messages/*.golden); then it is deleted.

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/strongswan/govici/vici"
)

// legacyConnMessage builds the load-conn request for t: { "mw-<id>": { ... } }.
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
func legacyConnMessage(t dataplane.Tunnel) (*vici.Message, error) {
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
func legacySecretMessage(t dataplane.Tunnel) (*vici.Message, error) {
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

// AcceptSecretMessage builds the load-shared request for an accept-only
// key: owned by the REMOTE identity only. charon's credential manager
// picks the best-matching secret to build our AUTH payload (the primary
// one, owned by both identities, matches both perfectly: we always sign
// with the PSK), while verifying the peer's AUTH tries every secret that
// matches either identity (libcharon psk_authenticator.c process()
// enumerates create_shared_enumerator), so the peer may use this key or
// the primary one. The result holds the key: never log it.
func legacyAcceptSecretMessage(t dataplane.Tunnel, key []byte) (*vici.Message, error) {
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

func legacyNamed(name string, key string) *vici.Message {
	msg := vici.NewMessage()
	_ = msg.Set(key, name)
	return msg
}

func legacyReauth(name string) *vici.Message {
	b := &builder{}
	return b.section("ike", name, "reauth", "yes")
}

func legacyInitiate(name string, initWait time.Duration) *vici.Message {
	timeout := "-1"
	if initWait > 0 {
		timeout = strconv.FormatInt(initWait.Milliseconds(), 10)
	}
	b := &builder{}
	return b.section("child", ChildName, "ike", name, "timeout", timeout, "loglevel", "-1")
}

func legacyTerminate(name string) *vici.Message {
	b := &builder{}
	return b.section("ike", name, "force", "yes", "timeout", "-1", "loglevel", "-1")
}

// TestTypedMessagesEqualLegacy: the typed structs build the same messages
// as the untyped builder, key for key, in the same order.
func TestTypedMessagesEqualLegacy(t *testing.T) {
	m := &Manager{}
	waiting := &Manager{initWait: 2500 * time.Millisecond}
	legacy := map[string]func() (*vici.Message, error){
		"unload-conn":    func() (*vici.Message, error) { return legacyNamed("mw-t1", "name"), nil },
		"unload-shared":  func() (*vici.Message, error) { return legacyNamed("mw-t1#0123456789ab", "id"), nil },
		"rekey":          func() (*vici.Message, error) { return legacyReauth("mw-t1"), nil },
		"initiate-async": func() (*vici.Message, error) { return legacyInitiate("mw-t1", m.initWait), nil },
		"initiate-wait":  func() (*vici.Message, error) { return legacyInitiate("mw-t1", waiting.initWait), nil },
		"terminate":      func() (*vici.Message, error) { return legacyTerminate("mw-t1"), nil },
	}
	ts := messageTunnels()
	for k, tu := range ts {
		legacy["load-conn-"+k] = func() (*vici.Message, error) { return legacyConnMessage(tu) }
		legacy["load-shared-"+k] = func() (*vici.Message, error) { return legacySecretMessage(tu) }
		legacy["load-shared-accept-"+k] = func() (*vici.Message, error) { return legacyAcceptSecretMessage(tu, []byte("old-key\x00\xff")) }
	}
	cases := messageCases(m)
	if len(cases) != len(legacy) {
		t.Fatalf("%d typed cases, %d legacy", len(cases), len(legacy))
	}
	for _, c := range cases {
		typed, err := c.build()
		if err != nil {
			t.Fatal(err)
		}
		old, err := legacy[c.name]()
		if err != nil {
			t.Fatal(err)
		}
		if got, want := dump(typed), dump(old); got != want {
			t.Errorf("%s: typed\n%s\nlegacy\n%s", c.name, got, want)
		}
	}
}
