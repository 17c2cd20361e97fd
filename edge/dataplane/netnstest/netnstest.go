// Package netnstest gives privileged data-plane tests fresh network
// namespaces without ever leaving a Go thread inside one.
//
// The invariant, after Cilium's NetNS.Do: code that must run inside a
// namespace (creating it, writing a /proc/sys/net file, opening a socket)
// runs in a fresh goroutine that locks its OS thread and never unlocks it,
// so the Go runtime destroys that thread when the goroutine returns instead
// of handing a namespaced thread to other goroutines. Everything else
// (netlink.NewHandleAt, nftables.WithNetNSFd) works on a namespace handle
// and switches nothing.
//
// It lives under edge/dataplane because that is where its users are; it
// would move to edge/netnstest if other edge packages need it.
package netnstest

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (privileged data-plane test)")
	}
}

// New returns a handle to a fresh, empty network namespace (only a down
// loopback), closed when the test ends; the namespace disappears with its
// last handle or process.
func New(t testing.TB) netns.NsHandle {
	t.Helper()
	RequireRoot(t)
	type result struct {
		h   netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		h, err := netns.New()
		ch <- result{h, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Skipf("cannot create a network namespace: %v", r.err)
	}
	t.Cleanup(func() { _ = r.h.Close() })
	return r.h
}

// Do runs f on a fresh OS thread inside ns and returns its error. The
// thread is discarded afterwards. Sockets f opens stay in ns after Do
// returns and may be used from any goroutine.
func Do(ns netns.NsHandle, f func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := netns.Set(ns); err != nil {
			ch <- fmt.Errorf("enter namespace: %w", err)
			return
		}
		ch <- f()
	}()
	return <-ch
}

// Sysctl writes value to /proc/sys/<key> as seen from inside ns, e.g.
// Sysctl(ns, "net/ipv4/ip_forward", "1"). /proc/sys/net files act on the
// namespace of the thread that opens them, hence Do.
func Sysctl(ns netns.NsHandle, key, value string) error {
	return Do(ns, func() error {
		return os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644)
	})
}

// Path returns a file path naming ns for tools that want one (for example
// the ipsec.Charon supervisor): /proc/<pid>/fd/<fd>, valid while the
// handle is open.
func Path(ns netns.NsHandle) string {
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(ns))
}
