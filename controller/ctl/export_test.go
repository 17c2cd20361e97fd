package ctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
)

// TestSiteExport: against a real controller, create the seed's two sites
// with the remote one unmanaged, export it in both formats (printed and
// written), check the files' modes (0600, also over a looser existing
// file) and contents, and the refusals (managed site, bad format).
func TestSiteExport(t *testing.T) {
	e := startController(t)
	e.must(t, "sites", "create", "hub", "--role", "hub", "--transport", "inet1=96.3.36.10", "--lan", "10.1.1.0/24")
	e.must(t, "site", "create", "remote", "--unmanaged", "--transport", "inet1=110.19.112.126", "--lan", "10.2.1.0/24")
	e.must(t, "topology", "set", "--mode", "hub-and-spoke")
	if list := e.must(t, "sites", "list"); !strings.Contains(list, "unmanaged") {
		t.Errorf("sites list does not show the unmanaged site as such:\n%s", list)
	}

	out := e.must(t, "site", "export", "remote", "--format", "linux")
	for _, w := range []string{"==> swanctl.conf <==", "==> meshwan-gre.sh <==", "==> meshwan.nft <==", "remote_addrs = 96.3.36.10", "secret = 0x"} {
		if !strings.Contains(out, w) {
			t.Errorf("printed linux export lacks %q", w)
		}
	}

	dir := filepath.Join(e.dir, "remote")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	loose := filepath.Join(dir, "swanctl.conf")
	if err := os.WriteFile(loose, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	out = e.must(t, "site", "export", "remote", "--format", "linux", "--out", dir)
	if !strings.Contains(out, "site remote (linux, intent revision ") || !strings.Contains(out, loose) {
		t.Errorf("export --out printed: %s", out)
	}
	for _, name := range []string{"swanctl.conf", "meshwan-gre.sh", "meshwan.nft"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v mode %v, want 0600", name, err, st.Mode().Perm())
		}
	}
	if raw, _ := os.ReadFile(loose); !strings.Contains(string(raw), "connections {") {
		t.Errorf("swanctl.conf not rewritten:\n%s", raw)
	}

	// RansNet needs a proposal the mbox can express: the default ESP
	// proposal (AES-GCM) is refused, naming the field.
	if _, err := e.run(t, "site", "export", "remote", "--format", "ransnet"); err == nil || !strings.Contains(err.Error(), "topology.ipsec.esp_proposal") || !strings.Contains(err.Error(), "AEAD") {
		t.Errorf("ransnet with AES-GCM: %v", err)
	}
	if _, err := e.run(t, "site", "export", "hub", "--format", "linux"); err == nil || !strings.Contains(err.Error(), `site "hub" is managed`) {
		t.Errorf("managed site: %v", err)
	}
	if _, err := e.run(t, "site", "export", "remote", "--format", "cisco"); err == nil || !strings.Contains(err.Error(), "--format") {
		t.Errorf("bad format: %v", err)
	}
	if _, err := e.run(t, "tokens", "create", "--site", "remote"); err == nil || !strings.Contains(err.Error(), "unmanaged") {
		t.Errorf("token for the unmanaged site: %v", err)
	}
}

// TestUnmanagedSiteInStatusAndWait: an unmanaged site counts as such in
// the status summary (its tunnels, the managed ends' reports, are not
// counted twice) and never holds up --wait (no edge runs there).
func TestUnmanagedSiteInStatusAndWait(t *testing.T) {
	up := pb.TunnelState_TUNNEL_STATE_UP
	tun := &pb.Tunnel{Id: "hub.inet1~remote.inet1", A: &pb.TunnelEnd{Site: "hub"}, B: &pb.TunnelEnd{Site: "remote"}}
	sites := []*pb.Site{
		{Name: "hub", Status: &pb.SiteStatus{State: pb.EdgeState_EDGE_STATE_UP, Tunnels: []*pb.TunnelStatus{{TunnelId: tun.Id, State: up}}}},
		{Name: "remote", Unmanaged: true, Status: &pb.SiteStatus{Tunnels: []*pb.TunnelStatus{{TunnelId: tun.Id, State: up, Detail: "as reported by hub"}}}},
	}
	f := summarize(sites, []*pb.Tunnel{tun})
	if f.Sites.Total != 2 || f.Sites.Up != 1 || f.Sites.Unmanaged != 1 || f.Sites.NeverSeen != 0 || f.Tunnels.Up != 1 {
		t.Errorf("summary %+v", f)
	}
	if done, lag := convergence([]string{"hub", "remote"}, sites, []*pb.Tunnel{tun}); done != 2 || len(lag) != 0 {
		t.Errorf("convergence: %d done, lag %v", done, lag)
	}
}
