// Package secrets owns the controller's secret material: the master key
// (a file, never written to etcd), sealing with AES-256-GCM under it, and
// the generation of tunnel pre-shared keys. Anything secret that the
// controller stores in etcd goes through Seal, bound (as GCM additional
// data) to the key it is stored under, so a sealed value copied to another
// key does not open.
package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// PSKSize is the length of a tunnel pre-shared key: 256 bits.
const PSKSize = 32

// keySize is the AES-256 master key length.
const keySize = 32

// sealVersion prefixes every sealed value so the format can evolve.
const sealVersion byte = 1

// ErrOpen is returned when a sealed value does not open: wrong master key,
// tampering, or a value moved to another key.
var ErrOpen = errors.New("sealed value does not open with this master key")

// NewPSK returns a fresh pre-shared key from crypto/rand.
func NewPSK() []byte {
	k := make([]byte, PSKSize)
	rand.Read(k) // never fails (crypto/rand since Go 1.24)
	return k
}

// Sealer seals and opens values with the master key.
type Sealer struct {
	aead cipher.AEAD
}

// NewSealer returns a Sealer for a 32-byte master key.
func NewSealer(key []byte) (*Sealer, error) {
	if len(key) != keySize {
		return nil, fmt.Errorf("master key is %d bytes, want %d", len(key), keySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// Seal encrypts plain, bound to context (for example the store key).
// Output: version byte | 12-byte random nonce | ciphertext+tag.
func (s *Sealer) Seal(plain []byte, context string) []byte {
	out := make([]byte, 1+s.aead.NonceSize(), 1+s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	out[0] = sealVersion
	rand.Read(out[1:])
	return s.aead.Seal(out, out[1:], plain, []byte(context))
}

// Open decrypts what Seal produced for the same context.
func (s *Sealer) Open(sealed []byte, context string) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < 1+n+s.aead.Overhead() || sealed[0] != sealVersion {
		return nil, fmt.Errorf("%w: malformed (%d bytes)", ErrOpen, len(sealed))
	}
	plain, err := s.aead.Open(nil, sealed[1:1+n], sealed[1+n:], []byte(context))
	if err != nil {
		return nil, ErrOpen
	}
	return plain, nil
}

// LoadOrCreateMasterKey reads the master key file (64 hex characters), or
// creates it with mode 0600 if it does not exist. A key file readable by
// group or others is refused: whoever reads it can open every PSK.
func LoadOrCreateMasterKey(path string) (key []byte, created bool, err error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key = make([]byte, keySize)
		rand.Read(key)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, false, fmt.Errorf("create master key %s: %w", path, err)
		}
		if _, err := f.WriteString(hex.EncodeToString(key) + "\n"); err != nil {
			f.Close()
			return nil, false, fmt.Errorf("write master key %s: %w", path, err)
		}
		if err := f.Close(); err != nil {
			return nil, false, fmt.Errorf("write master key %s: %w", path, err)
		}
		return key, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read master key %s: %w", path, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, false, fmt.Errorf("master key %s has mode %04o: it must not be readable by group or others (chmod 600)", path, fi.Mode().Perm())
	}
	key, err = hex.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(key) != keySize {
		return nil, false, fmt.Errorf("master key %s must hold %d hex characters", path, 2*keySize)
	}
	return key, false, nil
}
