package ctl

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/controller/daemon"
	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/meshwan/meshwan/edge/identity"
	"github.com/meshwan/meshwan/edge/syncer"
	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
)

type ctlEnv struct {
	d   *daemon.Daemon
	env map[string]string
	ctx context.Context
	dir string
}

// startController starts a whole controller in-process (embedded etcd)
// and points meshwanctl at it through the environment only.
func startController(t *testing.T) *ctlEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	dir := t.TempDir()
	d, err := daemon.Start(ctx, daemon.Config{DataDir: dir, GRPCListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		TunnelPool: "10.255.0.0/16", ASNPool: "4200000000-4200099999", UnsafeNoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return &ctlEnv{d: d, ctx: ctx, dir: t.TempDir(), env: map[string]string{
		"MESHWAN_CONTROLLER": d.GRPCAddr.String(), "MESHWAN_CA_FILE": filepath.Join(dir, "ca.crt"), "MESHWAN_TOKEN_FILE": filepath.Join(dir, "admin.token")}}
}

func (e *ctlEnv) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	a := &App{Out: &out, Err: &errb, Getenv: func(k string) string { return e.env[k] }, Poll: 100 * time.Millisecond}
	cmd := a.Command()
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(e.ctx)
	return out.String(), err
}

func (e *ctlEnv) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := e.run(t, args...)
	if err != nil {
		t.Fatalf("meshwanctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (e *ctlEnv) file(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const brSite = `
  - name: br2
    transports: [{name: inet1, address: 198.51.100.2}]
    lan_prefixes: [10.3.0.0/24]
`

// seedPlus returns the example seed network with extra site entries.
func seedPlus(t *testing.T, extra string) string {
	raw, err := os.ReadFile("../../deploy/examples/seed.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	i := strings.Index(s, "topology:")
	return s[:i] + strings.TrimPrefix(extra, "\n") + s[i:]
}

// TestPlanApplyIdempotentAllOrNothingPrune is the "done when" and
// more, against a real controller: plan changes nothing, apply creates the
// seed network, a second apply prints "no changes", tunnels list shows the
// /30, a refused file changes nothing and names file:line:col, and sites
// missing from the file go only with --prune.
func TestPlanApplyIdempotentAllOrNothingPrune(t *testing.T) {
	e := startController(t)
	seed := "../../deploy/examples/seed.yaml"
	out := e.must(t, "plan", "-f", seed)
	if !strings.Contains(out, "+ site hq") || !strings.Contains(out, "+ tunnel hq.inet1~remote.inet1") {
		t.Fatalf("plan:\n%s", out)
	}
	if out := e.must(t, "sites", "list"); strings.Contains(out, "hq") {
		t.Fatalf("plan changed something:\n%s", out)
	}
	out = e.must(t, "apply", "-f", seed)
	if !strings.HasPrefix(out, "Applied "+seed) || !strings.Contains(out, "2 sites to create") {
		t.Fatalf("apply:\n%s", out)
	}
	if out := e.must(t, "apply", "-f", seed); !strings.HasPrefix(out, "no changes") {
		t.Fatalf("second apply:\n%s", out)
	}
	out = e.must(t, "tunnels", "list")
	if !strings.Contains(out, "hq.inet1~remote.inet1  10.255.0.0/30  10.255.0.1/30 96.3.36.10  10.255.0.2/30 110.19.112.126") {
		t.Fatalf("tunnels list:\n%s", out)
	}

	// All or nothing: a new site plus one whose LAN overlaps it.
	bad := e.file(t, "bad.yaml", seedPlus(t, brSite+`  - name: br3
    transports: [{name: inet1, address: 198.51.100.3}]
    lan_prefixes: [10.2.0.0/16]
`))
	before := e.must(t, "sites", "list", "-o", "json")
	_, err := e.run(t, "apply", "-f", bad)
	// The file check finds it first, at the field's position.
	if err == nil || !strings.Contains(err.Error(), bad+":23:20: sites[3].lan_prefixes[0]: site \"br3\": 10.2.0.0/16 overlaps 10.2.1.0/24 of site \"remote\"") {
		t.Fatalf("overlapping file: %v", err)
	}
	// A clash only the controller sees (with a site not in the file):
	// refused as a whole, located in the file.
	e.must(t, "sites", "create", "lab", "--transport", "inet1=203.0.113.9", "--lan", "10.9.0.0/24")
	before = e.must(t, "sites", "list", "-o", "json")
	clash := e.file(t, "clash.yaml", seedPlus(t, brSite+`  - name: br3
    transports: [{name: inet1, address: 198.51.100.3}]
    lan_prefixes: [10.9.0.0/25]
`))
	_, err = e.run(t, "apply", "-f", clash)
	if err == nil || !strings.Contains(err.Error(), clash+":23:20: site \"br3\"") || !strings.Contains(err.Error(), `of site "lab"`) || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("clash: %v", err)
	}
	if after := e.must(t, "sites", "list", "-o", "json"); after != before {
		t.Fatalf("refused apply changed the sites:\n%s\n%s", before, after)
	}

	// lab is not in the file: kept and listed without --prune.
	out = e.must(t, "plan", "-f", seed)
	if !strings.HasPrefix(out, "no changes") || !strings.Contains(out, "kept (apply --prune deletes them): lab") {
		t.Fatalf("plan without prune:\n%s", out)
	}
	out = e.must(t, "plan", "-f", seed, "--prune")
	if !strings.Contains(out, "- site lab") {
		t.Fatalf("plan --prune:\n%s", out)
	}
	e.must(t, "apply", "-f", seed, "--prune")
	if out := e.must(t, "sites", "list"); strings.Contains(out, "lab") {
		t.Fatalf("prune left lab:\n%s", out)
	}
	if out := e.must(t, "apply", "-f", seed, "--prune", "-o", "yaml"); !strings.Contains(out, "changed: false") {
		t.Fatalf("apply -o yaml after prune:\n%s", out)
	}
	if out := e.must(t, "status"); !strings.Contains(out, "Sites:   2 (0 up, 0 down, 2 never seen)") || !strings.Contains(out, "Tunnels: 1 (") {
		t.Fatalf("status:\n%s", out)
	}
}

// simEdge enrolls a site with the real edge code and reports every tunnel
// of each state it receives up, until the test ends.
func simEdge(t *testing.T, e *ctlEnv, site string) {
	t.Helper()
	admin, closeConn, err := dial(Conn{Controller: e.env["MESHWAN_CONTROLLER"], CAFile: e.env["MESHWAN_CA_FILE"], TokenFile: e.env["MESHWAN_TOKEN_FILE"]})
	if err != nil {
		t.Fatal(err)
	}
	defer closeConn()
	tok, err := admin.CreateEnrollmentToken(e.ctx, &pb.CreateEnrollmentTokenRequest{Site: site})
	if err != nil {
		t.Fatal(err)
	}
	addr := e.env["MESHWAN_CONTROLLER"]
	id, err := identity.Enroll(e.ctx, t.TempDir(), identity.EnrollOptions{Controller: addr, Token: tok.GetSecret(), CAHash: tok.GetCaSha256()})
	if err != nil {
		t.Fatal(err)
	}
	s, err := syncer.New(syncer.Config{Controller: addr, Identity: id, AgentVersion: "sim", Heartbeat: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() { // owned by the test: cleanup cancels and waits
		defer close(done)
		runErr := make(chan error, 1)
		go func() { runErr <- s.Run(ctx) }()
		for {
			select {
			case <-ctx.Done():
				<-runErr
				return
			case st := <-s.Updates():
				r := syncer.Report{AppliedVersion: st.Version}
				for _, tun := range st.Desired.Tunnels {
					r.Tunnels = append(r.Tunnels, dataplane.TunnelStatus{ID: tun.ID, State: dataplane.TunnelUp, LinkUp: true})
				}
				s.Report(r)
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// TestApplyWait: --wait follows simulated edges to convergence, and times
// out naming the site whose edge never came.
func TestApplyWait(t *testing.T) {
	e := startController(t)
	seed := "../../deploy/examples/seed.yaml"
	e.must(t, "apply", "-f", seed)
	simEdge(t, e, "hq")
	simEdge(t, e, "remote")
	out := e.must(t, "apply", "-f", seed, "--wait", "--timeout", "60s")
	if !strings.Contains(out, "2/2 edges converged") {
		t.Fatalf("wait:\n%s", out)
	}

	// br2 has no edge: hq gets and reports its new tunnel, br2 lags.
	three := e.file(t, "three.yaml", seedPlus(t, brSite))
	out, err := e.run(t, "apply", "-f", three, "--wait", "--timeout", "3s")
	if err == nil || !strings.Contains(err.Error(), "did not converge after 3s: 2/3 edges converged; lagging:\n  br2: edge never seen") {
		t.Fatalf("wait without br2's edge: %v\n%s", err, out)
	}
	if !strings.Contains(out, "+ tunnel br2.inet1~hq.inet1") {
		t.Fatalf("apply output:\n%s", out)
	}
	simEdge(t, e, "br2")
	out = e.must(t, "apply", "-f", three, "--wait", "--timeout", "60s")
	if !strings.HasPrefix(out, "no changes") || !strings.Contains(out, "3/3 edges converged") {
		t.Fatalf("wait with br2:\n%s", out)
	}
}
