package secrets

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSealOpen(t *testing.T) {
	s, err := NewSealer(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	psk := NewPSK()
	sealed := s.Seal(psk, "tunnels/a")
	if bytes.Contains(sealed, psk) {
		t.Fatal("sealed value contains the PSK in clear")
	}
	got, err := s.Open(sealed, "tunnels/a")
	if err != nil || !bytes.Equal(got, psk) {
		t.Fatalf("Open = %x, %v; want the PSK back", got, err)
	}
	if _, err := s.Open(sealed, "tunnels/b"); !errors.Is(err, ErrOpen) {
		t.Errorf("Open under another context: %v, want ErrOpen", err)
	}
	other, _ := NewSealer(bytes.Repeat([]byte{8}, 32))
	if _, err := other.Open(sealed, "tunnels/a"); !errors.Is(err, ErrOpen) {
		t.Errorf("Open with another master key: %v, want ErrOpen", err)
	}
	if bytes.Equal(s.Seal(psk, "x"), s.Seal(psk, "x")) {
		t.Error("two seals of the same value are identical: nonce reuse")
	}
}

func TestNewPSK(t *testing.T) {
	a, b := NewPSK(), NewPSK()
	if len(a) != 32 || bytes.Equal(a, b) {
		t.Fatalf("NewPSK: %d bytes, distinct=%v", len(a), !bytes.Equal(a, b))
	}
}

func TestMasterKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "master.key")
	k1, created, err := LoadOrCreateMasterKey(path)
	if err != nil || !created || len(k1) != 32 {
		t.Fatalf("first load: %d bytes, created=%v, %v", len(k1), created, err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("master key mode %04o, want 0600", fi.Mode().Perm())
	}
	k2, created, err := LoadOrCreateMasterKey(path)
	if err != nil || created || !bytes.Equal(k1, k2) {
		t.Fatalf("second load must return the same key: created=%v, %v", created, err)
	}
	os.Chmod(path, 0o644)
	if _, _, err := LoadOrCreateMasterKey(path); err == nil {
		t.Error("a world-readable master key was accepted")
	}
}
