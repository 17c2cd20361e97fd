package syncer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/meshwan/meshwan/edge/dataplane"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/protobuf/proto"
)

// corpusLine is one value in go's corpus format.
func corpusLine(v any) string {
	switch v := v.(type) {
	case []byte:
		return "[]byte(" + strconv.Quote(string(v)) + ")"
	case bool:
		return "bool(" + strconv.FormatBool(v) + ")"
	}
	panic("unsupported corpus value")
}

// writeSeed writes one seed to testdata/fuzz/<FuzzName>/ in go's corpus
// format when MESHWAN_WRITE_CORPUS=1 (the committed seed corpus is
// written from the seed lists here).
func writeSeed(f *testing.F, vals ...any) {
	f.Helper()
	if os.Getenv("MESHWAN_WRITE_CORPUS") == "" {
		return
	}
	dir := filepath.Join("testdata", "fuzz", f.Name())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.Fatal(err)
	}
	body := "go test fuzz v1\n"
	for _, v := range vals {
		body += corpusLine(v) + "\n"
	}
	sum := sha256.Sum256([]byte(body))
	if err := os.WriteFile(filepath.Join(dir, "seed-"+hex.EncodeToString(sum[:8])), []byte(body), 0o644); err != nil {
		f.Fatal(err)
	}
}

func mustMarshal(f *testing.F, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// desiredSeeds: a sound state, a delta, and the values issue 11 says an
// edge must refuse as a whole (special addresses, overlapping LANs, a
// LAN holding a peer's underlay, short PSKs, absurd lifetimes and MTUs,
// bad proposals, unparsable fields).
func desiredSeeds() []*pb.DesiredState {
	psk := bytes.Repeat([]byte{0x5a}, 32)
	tun := func(id, inner, remoteInner, underlay string) *pb.EdgeTunnel {
		return &pb.EdgeTunnel{Id: id, LocalTransport: "inet1", LocalUnderlay: "20.0.0.1", RemoteSite: id, RemoteTransport: "inet1",
			RemoteUnderlay: underlay, LocalInner: inner, RemoteInner: remoteInner, Psk: psk, RemoteLanPrefixes: []string{"10.2.0.0/24"}, RemoteAsn: 4200000002}
	}
	ipsec := &pb.IPsecPolicy{IkeProposal: "aes256-sha256-modp2048", IkeLifetimeSeconds: 28800, EspProposal: "aes256gcm16", EspLifetimeSeconds: 3600, DpdSeconds: 30}
	good := &pb.DesiredState{Version: 1, Site: "hub", Asn: 4200000001, Mtu: 1400, StateHash: []byte("h1"), LanPrefixes: []string{"10.1.0.0/24"}, Ipsec: ipsec,
		Routing: pb.RoutingMode_ROUTING_MODE_BGP,
		PathPolicy: &pb.PathPolicy{ProbeIntervalMs: 200, DownAfter: 3, UpAfter: 3, HoldDownMs: 2000,
			SlaClasses:     []*pb.SLAClass{{Name: "rt", MaxRttMs: 150, MaxLossPct: 1, MaxJitterMs: 30, TransportPreference: []string{"inet1"}}},
			TrafficClasses: []*pb.TrafficClass{{Name: "voice", SlaClass: "rt", Dscp: []uint32{46}, Protocol: "udp", Ports: []string{"5060", "10000-20000"}, Destinations: []string{"10.2.0.0/24"}}}},
		Tunnels: []*pb.EdgeTunnel{tun("a", "10.255.0.1/30", "10.255.0.2", "20.0.0.2"), tun("b", "10.255.0.5/30", "10.255.0.6", "20.0.0.3")}}
	bad := proto.Clone(good).(*pb.DesiredState)
	bad.LanPrefixes = []string{"0.0.0.0/0", "127.0.0.0/8", "224.0.0.0/4", "169.254.0.0/16", "20.0.0.0/8"}
	bad.Mtu = 100000
	bad.Ipsec = &pb.IPsecPolicy{IkeProposal: "zzz-yyy", IkeLifetimeSeconds: 4294967295, EspProposal: "banana", DpdSeconds: 4294967295}
	bad.Tunnels = []*pb.EdgeTunnel{tun("a", "10.255.0.1/30", "10.255.0.2", "0.0.0.0"), tun("a", "10.255.0.2/30", "10.255.0.1", "224.0.0.1"),
		tun(strings.Repeat("x", 300), "10.255.0.9/31", "10.255.0.10", "20.0.0.1")}
	bad.Tunnels[0].Psk = []byte("short")
	bad.Tunnels[1].RemoteLanPrefixes = []string{"20.0.0.0/8", "10.1.0.0/16"}
	unparsable := &pb.DesiredState{Site: "x", LanPrefixes: []string{"10.1.0.0/33"},
		Tunnels:    []*pb.EdgeTunnel{{Id: "t", LocalUnderlay: "::1", RemoteUnderlay: "1.2.3.4%eth0", LocalInner: "fe80::1/64", RemoteInner: "x"}},
		PathPolicy: &pb.PathPolicy{TrafficClasses: []*pb.TrafficClass{{Dscp: []uint32{64}, Ports: []string{"70000-1"}}}}}
	delta := &pb.DesiredState{Version: 2, Site: "hub", Mtu: 1380, BaseHash: []byte("h1"), StateHash: []byte("h2"),
		Tunnels:        []*pb.EdgeTunnel{tun("b", "10.255.0.5/30", "10.255.0.6", "20.9.9.9"), tun("d", "10.255.0.13/30", "10.255.0.14", "20.0.0.5")},
		RemovedTunnels: []string{"a", "zz", ""}}
	current := &pb.DesiredState{Version: 1, BaseHash: []byte("h1"), StateHash: []byte("h1")}
	return []*pb.DesiredState{good, bad, unparsable, delta, current, {}}
}

// FuzzDesiredState: a desired state from the controller (proto wire
// bytes) through FromPB and the data plane's Validate. Every state FromPB
// accepts either validates or is refused with an error; neither panics,
// and an error never carries a tunnel's PSK.
func FuzzDesiredState(f *testing.F) {
	for _, m := range desiredSeeds() {
		b := mustMarshal(f, m)
		f.Add(b)
		writeSeed(f, b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m pb.DesiredState
		if proto.Unmarshal(b, &m) != nil {
			return
		}
		st, err := FromPB(&m)
		if err != nil {
			return
		}
		if len(st.Desired.Tunnels) != len(m.GetTunnels()) {
			t.Fatalf("%d tunnels became %d", len(m.GetTunnels()), len(st.Desired.Tunnels))
		}
		checkValidate(t, st.Desired)
	})
}

func checkValidate(t *testing.T, d dataplane.Desired) {
	t.Helper()
	err := d.Validate()
	if err == nil {
		return
	}
	if !errors.Is(err, dataplane.ErrInvalid) {
		t.Fatalf("refused with an error that is not dataplane.ErrInvalid: %v", err)
	}
	// A key leaks when the error shows it: checked with the keys replaced
	// by two different markers of their lengths (a fuzzed key may be a
	// substring of another fuzzed field the error quotes on purpose, e.g.
	// eleven ASCII zeros inside a refused address; only a value that
	// follows the key is the key).
	if leaksKeys(d, 0xa5) && leaksKeys(d, 0x5a) {
		t.Fatalf("error carries a tunnel's PSK: %.200v", err)
	}
}

// leaksKeys reports whether Validate's error on d, with every PSK and
// accepted key of 8 bytes or more replaced by mark repeated to its
// length, shows such a replacement (raw, hex or Go-quoted).
func leaksKeys(d dataplane.Desired, mark byte) bool {
	d.Tunnels = slices.Clone(d.Tunnels)
	var keys [][]byte
	for i := range d.Tunnels {
		tn := &d.Tunnels[i]
		if len(tn.PSK) >= 8 {
			tn.PSK = bytes.Repeat([]byte{mark}, len(tn.PSK))
			keys = append(keys, tn.PSK)
		}
		tn.AcceptPSKs = slices.Clone(tn.AcceptPSKs)
		for j, k := range tn.AcceptPSKs {
			if len(k) >= 8 {
				tn.AcceptPSKs[j] = bytes.Repeat([]byte{mark}, len(k))
				keys = append(keys, tn.AcceptPSKs[j])
			}
		}
	}
	err := d.Validate()
	if err == nil {
		return false
	}
	msg := err.Error()
	for _, k := range keys {
		q := strconv.Quote(string(k))
		if strings.Contains(msg, string(k)) || strings.Contains(msg, hex.EncodeToString(k)) || strings.Contains(msg, q[1:len(q)-1]) {
			return true
		}
	}
	return false
}

// FuzzFold: a full state then a second message (a delta on it when
// onBase, else on whatever base it names) folded as the syncer does.
// Invariants: no panic; a folded delta holds, sorted by id and each id
// once, exactly the base's tunnels not removed plus the delta's, each
// with the delta's version when resent; Validate does not panic on it.
func FuzzFold(f *testing.F) {
	seeds := desiredSeeds()
	for _, pair := range [][2]int{{0, 3}, {0, 4}, {1, 3}, {0, 0}, {3, 3}, {5, 4}} {
		a, b := mustMarshal(f, seeds[pair[0]]), mustMarshal(f, seeds[pair[1]])
		for _, onBase := range []bool{true, false} {
			f.Add(a, b, onBase)
			writeSeed(f, a, b, onBase)
		}
	}
	f.Fuzz(func(t *testing.T, base, next []byte, onBase bool) {
		var bm, nm pb.DesiredState
		if proto.Unmarshal(base, &bm) != nil || proto.Unmarshal(next, &nm) != nil {
			return
		}
		s := &Syncer{}
		bm.BaseHash = nil // the first message of a stream is a full state
		held, err := s.fold(&bm)
		if err != nil {
			return
		}
		s.held = &held
		if onBase && len(nm.GetBaseHash()) > 0 {
			nm.BaseHash = held.Hash
		}
		st, err := s.fold(&nm)
		if err != nil {
			return
		}
		checkValidate(t, st.Desired)
		isDelta := len(nm.GetBaseHash()) > 0 && !bytes.Equal(nm.GetBaseHash(), nm.GetStateHash())
		if !isDelta {
			return
		}
		want := map[string]bool{}
		for _, tun := range held.Desired.Tunnels {
			want[tun.ID] = true
		}
		for _, id := range nm.GetRemovedTunnels() {
			delete(want, id)
		}
		resent := map[string]bool{}
		for _, tun := range nm.GetTunnels() {
			resent[tun.GetId()] = true
			want[tun.GetId()] = true
			if slices.Contains(nm.GetRemovedTunnels(), tun.GetId()) {
				delete(want, tun.GetId())
			}
		}
		var got []string
		for _, tun := range st.Desired.Tunnels {
			got = append(got, tun.ID)
			if !resent[tun.ID] && (tun.MTU != int(nm.GetMtu())) {
				t.Fatalf("tunnel %.64q kept MTU %d, want the delta's %d", tun.ID, tun.MTU, nm.GetMtu())
			}
		}
		if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
			t.Fatalf("folded tunnels %.200q not sorted or not unique", got)
		}
		if len(got) != len(want) {
			t.Fatalf("folded tunnels %.200q, want the %d of %v", got, len(want), want)
		}
		for _, id := range got {
			if !want[id] {
				t.Fatalf("folded tunnels hold %.64q", id)
			}
		}
	})
}
