package ipsec

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/meshwan/meshwan/edge/dataplane"
)

var pskNew = []byte("a-brand-new-key-0123456789abcdefgh")

// keyed returns t1 with a key set.
func keyed(serial uint64, psk []byte, accept ...[]byte) dataplane.Desired {
	t := tunnel("t1", "198.51.100.1", psk)
	t.PSKSerial = serial
	t.AcceptPSKs = accept
	return desired(t)
}

func serialOf(t *testing.T, m *Manager) uint64 {
	t.Helper()
	st, err := m.Status(context.Background())
	if err != nil || len(st) != 1 {
		t.Fatalf("Status = %v, %v", st, err)
	}
	return st[0].PSKSerial
}

// A rotation's three key sets on the initiating end: the accept-only key
// is owned by the remote identity alone, each change loads before it
// unloads (no moment where a key the peer may use is missing), the commit
// re-authenticates the established IKE_SA, the connection is never
// reloaded or terminated, and the serial is reported once charon holds
// exactly the set.
func TestRotationKeySetsMakeBeforeBreak(t *testing.T) {
	ctx := context.Background()
	f := NewFakeCharon()
	m := NewManager(f.dial, Options{})
	must(t, m.Apply(ctx, keyed(1, psk1)))
	f.SetSA("mw-t1", IKEEstablished)
	f.takeCalls()
	if s := serialOf(t, m); s != 1 {
		t.Fatalf("serial %d, want 1", s)
	}
	oldID, newID := AcceptSecretID("t1", psk1), AcceptSecretID("t1", pskNew)

	// staged: old key used, new key accepted.
	must(t, m.Apply(ctx, keyed(2, psk1, pskNew)))
	wantSecrets := []string{"mw-t1 owners=[192.0.2.1 198.51.100.1] key=0", newID + " owners=[198.51.100.1] key=1"}
	slices.Sort(wantSecrets)
	if got := f.Secrets(psk1, pskNew); !slices.Equal(got, wantSecrets) {
		t.Fatalf("staged secrets\n%q\nwant\n%q", got, wantSecrets)
	}
	if w := writes(f.takeCalls()); !slices.Equal(w, []string{"load-shared " + newID}) {
		t.Fatalf("staged writes %q, want only the new accept-only secret", w)
	}
	if s := serialOf(t, m); s != 2 {
		t.Fatalf("serial %d, want 2", s)
	}

	// committed: new key used, old key accepted, IKE_SA re-authenticated.
	must(t, m.Apply(ctx, keyed(3, pskNew, psk1)))
	w := writes(f.takeCalls())
	want := []string{"load-shared " + oldID, "load-shared mw-t1", "load-conn mw-t1", "unload-shared " + newID, "rekey mw-t1"}
	if !slices.Equal(w, want) {
		t.Fatalf("committed writes\n%q\nwant\n%q", w, want)
	}
	wantSecrets = []string{"mw-t1 owners=[192.0.2.1 198.51.100.1] key=1", oldID + " owners=[198.51.100.1] key=0"}
	slices.Sort(wantSecrets)
	if got := f.Secrets(psk1, pskNew); !slices.Equal(got, wantSecrets) {
		t.Fatalf("committed secrets\n%q\nwant\n%q", got, wantSecrets)
	}
	if r := f.Rekeys(); !slices.Equal(r, []string{"mw-t1 reauth=yes"}) {
		t.Fatalf("rekeys %q, want one re-authentication", r)
	}
	if s := serialOf(t, m); s != 3 {
		t.Fatalf("serial %d, want 3", s)
	}

	// done: only the new key.
	must(t, m.Apply(ctx, keyed(4, pskNew)))
	if w := writes(f.takeCalls()); !slices.Equal(w, []string{"unload-shared " + oldID}) {
		t.Fatalf("done writes %q, want only the old key unloaded", w)
	}
	if got := f.Secrets(psk1, pskNew); !slices.Equal(got, []string{"mw-t1 owners=[192.0.2.1 198.51.100.1] key=1"}) {
		t.Fatalf("done secrets %q", got)
	}
	if s := serialOf(t, m); s != 4 {
		t.Fatalf("serial %d, want 4", s)
	}
	// Repeating the state changes nothing and re-authenticates nothing.
	must(t, m.Apply(ctx, keyed(4, pskNew)))
	if w := writes(f.takeCalls()); len(w) != 0 || len(f.Rekeys()) != 0 {
		t.Fatalf("a repeated Apply wrote %q", w)
	}
	if strings.Contains(f.String(), "mw-t1 ESTABLISHED") == false {
		t.Fatalf("the established SA is gone:\n%s", f)
	}
}

// The passive end swaps keys the same way but never re-authenticates: the
// initiating end does.
func TestRotationPassiveEndDoesNotReauth(t *testing.T) {
	ctx := context.Background()
	f := NewFakeCharon()
	m := NewManager(f.dial, Options{})
	passive := func(d dataplane.Desired) dataplane.Desired { d.Tunnels[0].Passive = true; return d }
	must(t, m.Apply(ctx, passive(keyed(2, psk1, pskNew))))
	f.SetSA("mw-t1", IKEEstablished)
	must(t, m.Apply(ctx, passive(keyed(3, pskNew, psk1))))
	if r := f.Rekeys(); len(r) != 0 {
		t.Fatalf("passive end re-authenticated: %q", r)
	}
	if s := serialOf(t, m); s != 3 {
		t.Fatalf("serial %d, want 3", s)
	}
}

// A key set charon did not take is not reported: the controller must not
// advance on it.
func TestRotationFailedLoadKeepsSerial(t *testing.T) {
	ctx := context.Background()
	f := NewFakeCharon()
	m := NewManager(f.dial, Options{})
	must(t, m.Apply(ctx, keyed(1, psk1)))
	f.mu.Lock()
	f.fail["load-shared "+AcceptSecretID("t1", pskNew)] = errors.New("out of memory")
	f.mu.Unlock()
	if err := m.Apply(ctx, keyed(2, psk1, pskNew)); err == nil {
		t.Fatal("Apply succeeded although charon refused a key")
	} else if strings.Contains(err.Error(), string(pskNew)) {
		t.Fatal("error leaks a key")
	}
	if s := serialOf(t, m); s == 2 {
		t.Fatal("serial 2 reported although its accept-only key is not loaded")
	}
	f.mu.Lock()
	clear(f.fail)
	f.mu.Unlock()
	must(t, m.Apply(ctx, keyed(2, psk1, pskNew)))
	if s := serialOf(t, m); s != 2 {
		t.Fatalf("serial %d after the retry, want 2", s)
	}
}
