package credentials

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshwan/meshwan/controller/store"
)

// Dir is the store prefix of the records.
const Dir = "credentials/"

// Service creates, lists and revokes credentials and authenticates tokens
// against an in-memory copy of the records that Run keeps current.
type Service struct {
	st        *store.Store
	bootstrap string
	log       *slog.Logger
	now       func() time.Time

	// mu guards byID, rev and applied. applied is closed (and replaced)
	// whenever rev advances, so writers can wait for their own change.
	mu      sync.RWMutex
	byID    map[string]Credential
	rev     int64
	applied chan struct{}
}

// New returns a Service. bootstrap is the token of --admin-token-file
// (role Admin; "" for none). Load must succeed before it authenticates
// anything but the bootstrap token, and Run must run to follow changes.
func New(st *store.Store, bootstrap string, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{st: st, bootstrap: bootstrap, log: log, now: time.Now,
		byID: map[string]Credential{}, applied: make(chan struct{})}
}

// Load reads every record once.
func (s *Service) Load(ctx context.Context) error {
	kvs, rev, err := s.st.List(ctx, Dir, 0)
	if err != nil {
		return fmt.Errorf("load credentials: %w", err)
	}
	byID := make(map[string]Credential, len(kvs))
	for _, kv := range kvs {
		if c, ok := s.decode(kv.Key, kv.Value); ok {
			byID[c.ID] = c
		}
	}
	s.mu.Lock()
	s.byID, s.rev = byID, rev
	s.advanceLocked()
	s.mu.Unlock()
	return nil
}

// Run follows changes to the records from the revision Load read until ctx
// ends. A compacted watch reloads everything.
func (s *Service) Run(ctx context.Context) error {
	s.mu.RLock()
	rev := s.rev
	s.mu.RUnlock()
	for b := range s.st.WatchFrom(ctx, Dir, rev) {
		if b.Reset {
			if err := s.Load(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("reload credentials after compaction", "err", err)
			}
			continue
		}
		s.mu.Lock()
		for _, ev := range b.Events {
			id := strings.TrimPrefix(ev.Key, Dir)
			if ev.Deleted {
				delete(s.byID, id)
			} else if c, ok := s.decode(ev.Key, ev.Value); ok {
				s.byID[c.ID] = c
			}
		}
		if b.Revision > s.rev {
			s.rev = b.Revision
		}
		s.advanceLocked()
		s.mu.Unlock()
	}
	return ctx.Err()
}

func (s *Service) advanceLocked() {
	close(s.applied)
	s.applied = make(chan struct{})
}

func (s *Service) decode(key string, raw []byte) (Credential, bool) {
	var c Credential
	if err := json.Unmarshal(raw, &c); err != nil || c.ID != strings.TrimPrefix(key, Dir) {
		s.log.Error("unreadable credential record ignored", "key", key, "err", err)
		return Credential{}, false
	}
	return c, true
}

// waitApplied returns once the in-memory copy has seen revision rev: a
// credential created or revoked here is usable (or refused) here as soon
// as the call returns.
func (s *Service) waitApplied(ctx context.Context, rev int64) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		s.mu.RLock()
		done, ch := s.rev >= rev, s.applied
		s.mu.RUnlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("credentials: waiting for the watch to apply revision %d: %w", rev, ctx.Err())
		}
	}
}

// Authenticate returns the principal token stands for. It never reads etcd.
func (s *Service) Authenticate(token string) (Principal, error) {
	return authenticate(token, s.bootstrap, func(id string) (Credential, bool) {
		s.mu.RLock()
		defer s.mu.RUnlock()
		c, ok := s.byID[id]
		return c, ok
	}, s.now())
}

// Usable reports whether the credential id still authenticates (the
// bootstrap principal always does): a dashboard session made with a
// credential ends when the credential is revoked or expires.
func (s *Service) Usable(id string) bool {
	if id == BootstrapID {
		return s.bootstrap != ""
	}
	s.mu.RLock()
	c, ok := s.byID[id]
	s.mu.RUnlock()
	return ok && c.Usable(s.now())
}

// Create makes a credential and returns it with its token (ID.SECRET),
// which is not kept anywhere.
func (s *Service) Create(ctx context.Context, name string, role Role, ttl time.Duration) (Credential, string, error) {
	if err := CheckName(name); err != nil {
		return Credential{}, "", err
	}
	if !role.Valid() {
		return Credential{}, "", fmt.Errorf("%w: role: want read_only, operator or admin", ErrInvalid)
	}
	if err := CheckTTL(ttl); err != nil {
		return Credential{}, "", err
	}
	idRaw := make([]byte, idBytes)
	rand.Read(idRaw)
	secRaw := make([]byte, secretLen)
	rand.Read(secRaw)
	id, secret := hex.EncodeToString(idRaw), base64.RawURLEncoding.EncodeToString(secRaw)
	now := s.now().UTC().Truncate(time.Second)
	c := Credential{ID: id, Name: name, Role: role, Hash: hashSecret(secret), CreatedAt: now}
	if ttl > 0 {
		c.ExpiresAt = now.Add(ttl)
	}
	raw, _ := json.Marshal(c)
	ok, rev, err := s.st.Txn(ctx, []store.Cmp{store.Absent(Dir + id)}, []store.Op{store.Put(Dir+id, raw)})
	if err != nil {
		return Credential{}, "", err
	}
	if !ok {
		return Credential{}, "", errors.New("credential id collision (retry)")
	}
	if err := s.waitApplied(ctx, rev); err != nil {
		return Credential{}, "", err
	}
	return c, id + "." + secret, nil
}

// List returns every credential (revoked and expired ones too), oldest
// first, from the in-memory copy.
func (s *Service) List() []Credential {
	s.mu.RLock()
	out := make([]Credential, 0, len(s.byID))
	for _, c := range s.byID {
		out = append(out, c)
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b Credential) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// Revoke refuses the credential from now on, on every replica (each one's
// watch applies it). Revoking a revoked credential returns it unchanged.
// When Revoke returns, this process already refuses it.
func (s *Service) Revoke(ctx context.Context, id string) (Credential, error) {
	if id == BootstrapID {
		return Credential{}, fmt.Errorf("%w: id: the bootstrap credential is the --admin-token-file; replace the file and restart to change it", ErrInvalid)
	}
	for {
		kv, ok, err := s.st.Get(ctx, Dir+id)
		if err != nil {
			return Credential{}, err
		}
		if !ok {
			return Credential{}, fmt.Errorf("%w: credential %q", ErrNotFound, Truncate(id))
		}
		c, ok := s.decode(kv.Key, kv.Value)
		if !ok {
			return Credential{}, fmt.Errorf("stored credential %s is unreadable", Truncate(id))
		}
		if c.Revoked {
			return c, nil
		}
		c.Revoked, c.RevokedAt = true, s.now().UTC().Truncate(time.Second)
		raw, _ := json.Marshal(c)
		ok, rev, err := s.st.Txn(ctx, []store.Cmp{store.Unchanged(Dir+id, kv.ModRevision)}, []store.Op{store.Put(Dir+id, raw)})
		if err != nil {
			return Credential{}, err
		}
		if ok {
			return c, s.waitApplied(ctx, rev)
		}
	}
}
