package ipsec

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/meshwan/meshwan/controller/intent"
	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/dataplane/validity"
)

// The edge fills the same defaults as the controller: an edge talking to an
// older controller that sends empty fields must not negotiate something else.
func TestDefaultsMatchController(t *testing.T) {
	c := intent.Topology{}.WithDefaults().IPsec
	d := DefaultPolicy
	if d.IKEProposal != c.IKEProposal || d.ESPProposal != c.ESPProposal || d.IKELifetime != c.IKELifetime ||
		d.ESPLifetime != c.ESPLifetime || d.DPDInterval != c.DPD {
		t.Fatalf("edge defaults %+v differ from the controller's %+v", d, c)
	}
}

// The default ESP proposal carries a DH group (PFS on every CHILD_SA rekey,
// group 14 as in the seed) and passes the shared validity rules; an explicit
// proposal without a group stays valid (it means "no PFS").
func TestDefaultESPProposalHasPFS(t *testing.T) {
	if DefaultPolicy.ESPProposal != "aes256gcm16-modp2048" {
		t.Errorf("default ESP proposal %q, want aes256gcm16-modp2048", DefaultPolicy.ESPProposal)
	}
	for _, s := range []string{DefaultPolicy.ESPProposal, "aes256gcm16", "aes256gcm16-ecp384", "aes256gcm16-curve25519"} {
		if err := validity.Proposal(validity.ESP, s); err != nil {
			t.Errorf("ESP %q refused: %v", s, err)
		}
	}
	m, err := ConnMessage(tunnel("t1", "198.51.100.1", psk1))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.String(); !strings.Contains(got, "esp_proposals = aes256gcm16-modp2048\n") {
		t.Errorf("connection without an ESP proposal does not ask for PFS:\n%s", got)
	}
}

// An edge whose ESP proposal changes (here from an explicit pre-PFS
// "aes256gcm16" to the PFS default) re-loads the connection and does
// nothing else: no unload, no terminate, no initiate, no rekey of its own.
// What happens to the running SAs is charon's doing and differs by end
// (the fake models charon 5.9's vici_config.c merge_config): the
// initiating end (start_action trap|start) closes its IKE_SA and initiates
// a new one with the new proposal, one renegotiation per changed tunnel;
// the passive end (trap) keeps its SAs. An unchanged re-load (agent
// restart, PSK change) keeps the SAs at both ends (TestApplyChanges,
// rotate_test.go). docs/ipsec.md says so.
func TestESPProposalChangeReloadsOnly(t *testing.T) {
	for _, passive := range []bool{false, true} {
		ctx := context.Background()
		f := NewFakeCharon()
		m := NewManager(f.dial, Options{})
		tu := func(esp string) dataplane.Desired {
			d := desired(tunnel("t1", "198.51.100.1", psk1))
			d.Tunnels[0].Passive = passive
			d.Tunnels[0].IPsec.ESPProposal = esp
			return d
		}
		must(t, m.Apply(ctx, tu("aes256gcm16"))) // a stored pre-PFS proposal keeps working
		if got := f.String(); !strings.Contains(got, "esp [aes256gcm16] ") {
			t.Fatalf("explicit no-PFS proposal not loaded as given:\n%s", got)
		}
		f.SetSA("mw-t1", IKEEstablished)
		f.takeCalls()

		must(t, m.Apply(ctx, tu(""))) // empty: the new default
		want := []string{"load-shared mw-t1", "load-conn mw-t1"}
		if got := writes(f.takeCalls()); !slices.Equal(got, want) {
			t.Errorf("passive=%v: writes %q, want %q", passive, got, want)
		}
		if r := f.Rekeys(); len(r) != 0 {
			t.Errorf("passive=%v: rekeys %q, want none", passive, r)
		}
		wantSA := "sa mw-t1 CONNECTING children 0" // charon re-initiates
		if passive {
			wantSA = "sa mw-t1 ESTABLISHED children 1"
		}
		got := f.String()
		for _, w := range []string{"esp [aes256gcm16-modp2048] ", wantSA} {
			if !strings.Contains(got, w) {
				t.Errorf("passive=%v: charon state lacks %q:\n%s", passive, w, got)
			}
		}
		must(t, m.Apply(ctx, tu("")))
		if got := writes(f.takeCalls()); len(got) != 0 {
			t.Errorf("passive=%v: second apply writes %q", passive, got)
		}
	}
}
