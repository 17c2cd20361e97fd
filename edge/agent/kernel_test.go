package agent

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane/ipsec"
	"github.com/meshwan/meshwan/edge/dataplane/kernel"
	"github.com/meshwan/meshwan/edge/dataplane/link"
)

// TestWaitSAsGone: the wait returns once the retiring pairs have left the
// kernel (SAs of other tunnels do not matter), gives up after its bound
// with an error naming the pairs still installed, and passes a list error
// through.
func TestWaitSAsGone(t *testing.T) {
	a, b, c := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("203.0.113.2")
	pairs := map[[2]netip.Addr]bool{{a, b}: true, {b, a}: true}
	other := [2]netip.Addr{a, c}

	calls := 0 // waitSAsGone reads synchronously
	vanishing := func() (map[[2]netip.Addr]bool, error) {
		calls++
		if calls < 3 {
			return map[[2]netip.Addr]bool{{a, b}: true, {b, a}: true, other: true}, nil
		}
		return map[[2]netip.Addr]bool{other: true}, nil
	}
	if err := waitSAsGone(t.Context(), vanishing, pairs, time.Minute); err != nil {
		t.Fatalf("SAs gone after 3 reads: %v", err)
	}
	if calls != 3 {
		t.Errorf("read the SAs %d times, want 3 (return as soon as they are gone)", calls)
	}

	stuck := func() (map[[2]netip.Addr]bool, error) {
		return map[[2]netip.Addr]bool{{b, a}: true}, nil
	}
	err := waitSAsGone(t.Context(), stuck, pairs, 100*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "198.51.100.2>192.0.2.1") || strings.Contains(err.Error(), "192.0.2.1>198.51.100.2") {
		t.Errorf("stuck SA: %v, want a deadline error naming 198.51.100.2>192.0.2.1 only", err)
	}

	broken := errors.New("netlink gone")
	if err := waitSAsGone(t.Context(), func() (map[[2]netip.Addr]bool, error) { return nil, broken }, pairs, time.Minute); !errors.Is(err, broken) {
		t.Errorf("list error: %v, want %v", err, broken)
	}
}

// TestRetireTakesIPsecDownBeforeLinks: before the link step deletes links
// (a tunnel removed, another re-created with a new remote), retire unloads
// exactly those tunnels' IPsec connections, terminates their SAs and waits
// until the kernel no longer lists them — while every link still exists.
// The kept tunnel's connection is untouched and a new tunnel's is not
// loaded before its link exists; the link step and the later IPsec step
// then re-create the changed tunnel and add the new one.
func TestRetireTakesIPsecDownBeforeLinks(t *testing.T) {
	ctx := t.Context()
	lf := kernel.NewFakeNetlink()
	fc := ipsec.NewFakeCharon()
	d := twoTransports()
	for i := range d.Tunnels {
		d.Tunnels[i].MTU = 1400
		d.Tunnels[i].PSK = make([]byte, 32)
		d.Tunnels[i].RemoteUnderlay = netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)})
	}
	var charonLog []string
	// The kernel lists a tunnel's SAs until charon was told to terminate
	// it, like the real one.
	var reads int
	sas := func() (map[[2]netip.Addr]bool, error) {
		reads++
		charonLog = append(charonLog, fc.TakeCalls()...)
		out := map[[2]netip.Addr]bool{}
		for _, tn := range d.Tunnels {
			if !slices.Contains(charonLog, "terminate "+ipsec.ConnName(tn.ID)) {
				out[[2]netip.Addr{tn.LocalUnderlay, tn.RemoteUnderlay}] = true
				out[[2]netip.Addr{tn.RemoteUnderlay, tn.LocalUnderlay}] = true
			}
		}
		return out, nil
	}
	k := &Kernel{Link: link.NewManager(lf, link.Options{}), IPsec: ipsec.NewManager(fc.Dial, ipsec.Options{}), SAs: sas}
	if err := k.Link.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := k.IPsec.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	fc.TakeCalls()
	lf.ResetCalls()

	next := d
	next.Tunnels = slices.Clone(d.Tunnels[:2])                         // t3 removed
	next.Tunnels[0].RemoteUnderlay = netip.MustParseAddr("192.0.2.99") // t1 re-created
	t4 := d.Tunnels[2]                                                 // new: its connection waits for its link
	t4.ID, t4.LinkName, t4.RemoteUnderlay = "t4", "mw-t4", netip.MustParseAddr("192.0.2.44")
	t4.LocalInner, t4.RemoteInner = netip.MustParsePrefix("10.255.0.13/30"), netip.MustParseAddr("10.255.0.14")
	next.Tunnels = append(next.Tunnels, t4)
	if err := k.retire(ctx, next); err != nil {
		t.Fatal(err)
	}
	charonLog = append(charonLog, fc.TakeCalls()...)
	if w := lf.Writes(); len(w) != 0 {
		t.Errorf("retire wrote links: %q", w)
	}
	var writes []string
	for _, c := range charonLog {
		if !strings.HasPrefix(c, "list-") && c != "get-shared" {
			writes = append(writes, c)
		}
	}
	want := []string{"unload-conn mw-t1", "unload-conn mw-t3", "unload-shared mw-t1", "unload-shared mw-t3", "terminate mw-t1", "terminate mw-t3"}
	if !slices.Equal(writes, want) {
		t.Errorf("charon commands in retire\n got %q\nwant %q", writes, want)
	}
	if reads == 0 {
		t.Error("retire did not wait for the SAs to leave the kernel")
	}

	// The rest of Apply: links (t3 deleted, t1 re-created), then IPsec.
	if err := k.Link.Apply(ctx, next); err != nil {
		t.Fatal(err)
	}
	if err := k.IPsec.Apply(ctx, next); err != nil {
		t.Fatal(err)
	}
	var loads []string
	for _, c := range fc.TakeCalls() {
		if strings.HasPrefix(c, "load-") || strings.HasPrefix(c, "unload-") {
			loads = append(loads, c)
		}
	}
	if want := []string{"load-shared mw-t1", "load-conn mw-t1", "load-shared mw-t4", "load-conn mw-t4"}; !slices.Equal(loads, want) {
		t.Errorf("IPsec after the link step\n got %q\nwant %q", loads, want)
	}
	// Nothing retires any more.
	if ret, _, err := k.Link.Retiring(next); err != nil || len(ret) != 0 {
		t.Errorf("retiring after the change: %v, %v", ret, err)
	}
}
