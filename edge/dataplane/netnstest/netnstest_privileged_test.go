package netnstest

import (
	"os"
	"runtime"
	"sync"
	"testing"

	"github.com/vishvananda/netns"
)

// TestPrivilegedNoThreadLeftInNamespace: New and Do give namespaces
// distinct from the caller's, Do runs inside the one asked for, and after
// many calls no goroutine of this process runs on a thread outside the
// original namespace (checked from many fresh goroutines, which the
// runtime schedules on whatever threads exist).
func TestPrivilegedNoThreadLeftInNamespace(t *testing.T) {
	host, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	hostFwd, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	ns := New(t)
	if ns.Equal(host) {
		t.Fatal("New returned the caller's namespace")
	}
	for range 20 {
		var inside netns.NsHandle
		if err := Do(ns, func() (err error) { inside, err = netns.Get(); return }); err != nil {
			t.Fatal(err)
		}
		if !inside.Equal(ns) {
			t.Error("Do ran outside the namespace")
		}
		inside.Close()
		if err := Sysctl(ns, "net/ipv4/ip_forward", "1"); err != nil {
			t.Fatal(err)
		}
	}
	var inFwd []byte
	if err := Do(ns, func() (err error) { inFwd, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward"); return }); err != nil {
		t.Fatal(err)
	}
	if string(inFwd) != "1\n" {
		t.Errorf("ip_forward inside the namespace = %q, want 1", inFwd)
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); err != nil || string(b) != string(hostFwd) {
		t.Errorf("host ip_forward changed from %q to %q (%v)", hostFwd, b, err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	bad := 0
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cur, err := netns.Get()
			if err != nil {
				return
			}
			defer cur.Close()
			if !cur.Equal(host) {
				mu.Lock()
				bad++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if bad > 0 {
		t.Errorf("%d goroutines ran on a thread left in another namespace", bad)
	}
}
