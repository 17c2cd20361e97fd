package ipsec

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/strongswan/govici/vici"
)

var update = flag.Bool("update", false, "rewrite testdata/messages/*.golden")

// dump renders a message exactly: keys in order, strings and list items
// quoted, so a list of one "a,b" differs from a list of "a" and "b" and an
// empty string from a missing key (Message.String() shows neither).
func dump(m *vici.Message) string {
	var b strings.Builder
	var walk func(m *vici.Message, indent string)
	walk = func(m *vici.Message, indent string) {
		for _, k := range m.Keys() {
			switch v := m.Get(k).(type) {
			case string:
				fmt.Fprintf(&b, "%s%s = %q\n", indent, k, v)
			case []string:
				fmt.Fprintf(&b, "%s%s = %q\n", indent, k, v)
			case *vici.Message:
				fmt.Fprintf(&b, "%s%s {\n", indent, k)
				walk(v, indent+"  ")
				fmt.Fprintf(&b, "%s}\n", indent)
			default:
				fmt.Fprintf(&b, "%s%s = <%T>\n", indent, k, v)
			}
		}
	}
	walk(m, "")
	return b.String()
}

// messageCase is one message meshwan sends, built by the typed structs.
type messageCase struct {
	name  string
	build func() (*vici.Message, error)
}

// messageTunnels is a representative set: defaults, several proposals,
// odd lifetimes, a passive end, another address pair and key.
func messageTunnels() map[string]dataplane.Tunnel {
	def := tunnel("t1", "198.51.100.1", psk1)
	custom := tunnel("alpha.inet1~zulu.inet1", "203.0.113.77", []byte("another-key-0123456789abcdef-xyz"))
	custom.LocalUnderlay = netip.MustParseAddr("100.64.3.4")
	custom.IPsec = dataplane.IPsecPolicy{
		IKEProposal: "aes256-sha256-modp2048, aes128-sha256-ecp256,", ESPProposal: "aes128gcm16-ecp256,aes256-sha256-modp3072",
		IKELifetime: 90*time.Minute + 7*time.Second, ESPLifetime: 45 * time.Second, DPDInterval: 5 * time.Second,
	}
	passive := def
	passive.ID, passive.Passive = "t2", true
	passiveCustom := custom
	passiveCustom.Passive = true
	return map[string]dataplane.Tunnel{"default": def, "custom": custom, "passive": passive, "passive-custom": passiveCustom}
}

func messageCases(m *Manager) []messageCase {
	var cs []messageCase
	ts := messageTunnels()
	for _, k := range sortedKeys(ts) {
		t := ts[k]
		cs = append(cs,
			messageCase{"load-conn-" + k, func() (*vici.Message, error) { return ConnMessage(t) }},
			messageCase{"load-shared-" + k, func() (*vici.Message, error) { return SecretMessage(t) }},
			messageCase{"load-shared-accept-" + k, func() (*vici.Message, error) { return AcceptSecretMessage(t, []byte("old-key\x00\xff")) }},
		)
	}
	req := func(name string, v any) messageCase {
		return messageCase{name, func() (*vici.Message, error) { return marshal(name, v) }}
	}
	waiting := &Manager{initWait: 2500 * time.Millisecond}
	return append(cs,
		req("unload-conn", unloadConn{Name: "mw-t1"}),
		req("unload-shared", unloadShared{ID: "mw-t1#0123456789ab"}),
		req("rekey", rekeyRequest{IKE: "mw-t1", Reauth: true}),
		req("initiate-async", initiateRequest{Child: ChildName, IKE: "mw-t1", Timeout: m.initiateTimeout(), LogLevel: -1}),
		req("initiate-wait", initiateRequest{Child: ChildName, IKE: "mw-t1", Timeout: waiting.initiateTimeout(), LogLevel: -1}),
		req("terminate", terminateRequest{IKE: "mw-t1", Force: true, Timeout: -1, LogLevel: -1}),
		req("terminate-ike-id", terminateRequest{IKEID: "5", Force: true, Timeout: -1, LogLevel: -1}),
	)
}

// TestMessagesGolden: every request meshwan sends, built from the typed
// structs, has exactly the keys, order and values recorded in
// testdata/messages. The files were recorded while the untyped builder
// the structs replaced still existed, and TestTypedMessagesEqualLegacy
// (commit 50cd4f4, deleted with that builder) showed both built the same
// messages. The golden files hold test keys only.
func TestMessagesGolden(t *testing.T) {
	for _, c := range messageCases(&Manager{}) {
		m, err := c.build()
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		path := filepath.Join("testdata", "messages", c.name+".golden")
		got := dump(m)
		if *update {
			must(t, os.MkdirAll(filepath.Dir(path), 0o755))
			must(t, os.WriteFile(path, []byte(got), 0o644))
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if got != string(want) {
			t.Errorf("%s:\n%s\nwant (%s):\n%s", c.name, got, path, want)
		}
	}
}
