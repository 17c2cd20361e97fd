// Package ipsec owns meshwan's IKE side: one IKEv2 connection per tunnel,
// loaded into strongSwan's charon over VICI (github.com/strongswan/govici,
// every request and answer a Go struct marshalled by govici, see
// messages.go), with a PSK and a transport-mode CHILD_SA protecting the GRE packets
// between the two underlay addresses. It also supervises a private charon
// (Charon) for edges and labs that do not use a system-wide one.
//
// Names: connection "mw-<tunnel id>" with child "gre", shared secret id
// "mw-<tunnel id>", and "mw-<tunnel id>#<hash>" for each key the tunnel
// only accepts during a key rotation (AcceptSecretMessage). Only names
// with NamePrefix are ever unloaded, so connections an operator loads
// with swanctl are left alone.
//
// Key rotation (make-before-break): accept-only keys are loaded before
// the primary key changes and the keys no longer wanted are unloaded
// last; when the primary key of an initiating (non-Passive) end changes
// under an established IKE_SA, the Manager asks charon to re-authenticate
// it (charon runs make_before_break, see StrongswanConf). Status reports
// the key set serial charon holds exactly (PSKSerial).
//
// Apply is declarative. charon's list-conns shows a connection's endpoints
// and children but not its proposals, lifetimes or key, so the Manager
// also remembers a salted fingerprint of what it last loaded per name:
// a connection is (re)loaded when it is missing from charon (charon
// restarted), when its endpoints differ, or when its fingerprint differs
// (proposals, lifetimes, PSK changed). Consequences, by design:
//   - a new Manager (agent restart) re-loads every connection once; charon
//     treats an identical load-conn as an update and keeps the SAs;
//   - a changed PSK is loaded as a new secret and the connection is
//     re-loaded (unchanged connection config: SAs kept); established SAs
//     keep their keys and the new PSK authenticates the next IKE_SA, so
//     changing the PSK on both ends never drops traffic;
//   - a changed proposal, lifetime or DPD interval is a changed config for
//     charon: it undoes the old config's start action, so the initiating
//     end (trap|start) closes its IKE_SA and initiates a new one with the
//     new config, one renegotiation per changed tunnel; the passive end
//     (trap) keeps its SAs. charon never applies a changed config to an
//     existing SA, not even at its rekeys (docs/ipsec.md);
//   - Resync forgets the fingerprints to force a full reload.
//
// After loading, Apply initiates (asynchronously by default: the peer may
// not be up) the child of every tunnel that has no IKE_SA in progress or
// established and no usable CHILD_SA, skipping those it just loaded
// (start_action=trap|start already initiates them). Initiating is an
// action, not a configuration write: a second Apply loads and unloads
// nothing, but may initiate again if charon gave up on a peer.
//
// The PSK is never logged: log lines and errors carry names only, and
// secret messages are never printed.
package ipsec

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane"
	"github.com/strongswan/govici/vici"
)

// Options configure a Manager.
type Options struct {
	// Logger gets one line per change; nil discards.
	Logger *slog.Logger
	// InitiateTimeout: 0 initiates without waiting (VICI timeout -1), so
	// Apply never blocks on a peer; > 0 waits up to that long per tunnel.
	InitiateTimeout time.Duration
}

// Manager applies the IPsec part of a Desired through a VICI session. It
// dials lazily and re-dials after a broken connection (charon restarted).
// Its methods are serialized.
type Manager struct {
	dial     func(ctx context.Context) (Session, error)
	log      *slog.Logger
	initWait time.Duration
	salt     [16]byte

	mu     sync.Mutex
	s      Session
	loaded map[string][32]byte // conn name -> fingerprint of what we loaded
	// keyFP is a salted hash of the PSK last loaded per conn name: a
	// change on an initiating end with an established IKE_SA re-authenticates
	// it (key rotation).
	keyFP map[string][32]byte
	// serial is the key set serial (dataplane.Tunnel.PSKSerial) whose keys
	// charon holds, per tunnel id: set only once every key of the set is
	// loaded and every key not in it unloaded.
	serial map[string]uint64
	last   []dataplane.Tunnel
	// seen is what Tidy remembers of the settled IKE_SAs, per conn name;
	// activeQuiet, passiveQuiet and now are its settings and clock
	// (ActiveQuiet, PassiveQuiet, time.Now; tests change them).
	seen                      map[string]map[string]seenSA
	activeQuiet, passiveQuiet time.Duration
	now                       func() time.Time
}

// NewManager returns a Manager; dial opens a session, e.g.
// func(ctx context.Context) (Session, error) { return Dial(ctx, charon.SocketPath()) }.
func NewManager(dial func(ctx context.Context) (Session, error), opts Options) *Manager {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m := &Manager{dial: dial, log: log, initWait: opts.InitiateTimeout, loaded: map[string][32]byte{},
		keyFP: map[string][32]byte{}, serial: map[string]uint64{},
		activeQuiet: ActiveQuiet, passiveQuiet: PassiveQuiet, now: time.Now}
	_, _ = rand.Read(m.salt[:])
	return m
}

// Close closes the session, if any.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.s == nil {
		return nil
	}
	err := m.s.Close()
	m.s = nil
	return err
}

// fingerprint covers everything loaded for t, including the key. It is
// salted per Manager and kept in memory only.
func (m *Manager) fingerprint(conn *vici.Message, secret sharedSecret) [32]byte {
	h := sha256.New()
	h.Write(m.salt[:])
	h.Write([]byte(conn.String()))
	h.Write([]byte{0})
	h.Write([]byte(secret.Data))
	h.Write([]byte{0})
	h.Write([]byte(strings.Join(secret.Owners, ",")))
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

func (m *Manager) session(ctx context.Context) (Session, error) {
	if m.s != nil {
		return m.s, nil
	}
	s, err := m.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to charon: %w", err)
	}
	m.s = s
	return s, nil
}

// call runs a VICI command; a broken session is dropped so the next call
// re-dials. The returned error names the command, never the payload.
func (m *Manager) call(ctx context.Context, cmd string, in *vici.Message) (*vici.Message, error) {
	s, err := m.session(ctx)
	if err != nil {
		return nil, err
	}
	res, err := s.Call(ctx, cmd, in)
	if err != nil {
		if res == nil {
			_ = s.Close()
			m.s = nil
		}
		return res, fmt.Errorf("vici %s: %w", cmd, err)
	}
	return res, nil
}

func (m *Manager) stream(ctx context.Context, cmd, event string) ([]*vici.Message, error) {
	s, err := m.session(ctx)
	if err != nil {
		return nil, err
	}
	msgs, err := s.Stream(ctx, cmd, event, nil)
	if err != nil {
		_ = s.Close()
		m.s = nil
		return nil, fmt.Errorf("vici %s: %w", cmd, err)
	}
	return msgs, nil
}

// request runs a command whose request is the struct req.
func (m *Manager) request(ctx context.Context, cmd string, req any) (*vici.Message, error) {
	in, err := marshal(cmd+" request", req)
	if err != nil {
		return nil, err
	}
	return m.call(ctx, cmd, in)
}

// listConns and listSAs run the streamed list commands and parse them.
func (m *Manager) listConns(ctx context.Context) (map[string]observedConn, error) {
	msgs, err := m.stream(ctx, "list-conns", "list-conn")
	if err != nil {
		return nil, err
	}
	return parseConns(msgs)
}

func (m *Manager) listSAs(ctx context.Context) (map[string][]ikeSA, error) {
	msgs, err := m.stream(ctx, "list-sas", "list-sa")
	if err != nil {
		return nil, err
	}
	return parseSAs(msgs)
}

// sharedIDs runs get-shared: the ids of the loaded shared secrets.
func (m *Manager) sharedIDs(ctx context.Context) ([]string, error) {
	res, err := m.call(ctx, "get-shared", nil)
	if err != nil {
		return nil, err
	}
	var keys sharedKeys
	if err := vici.UnmarshalMessage(res, &keys); err != nil {
		return nil, fmt.Errorf("parse get-shared answer: %w", err)
	}
	return keys.Keys, nil
}

// Apply makes charon hold exactly d's connections and secrets (among the
// "mw-" names), then initiates tunnels that have no SA (see the package
// comment). It carries on past a failing tunnel and joins the errors.
func (m *Manager) Apply(ctx context.Context, d dataplane.Desired) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("ipsec apply: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.last = slices.Clone(d.Tunnels)

	conns, err := m.listConns(ctx)
	if err != nil {
		return fmt.Errorf("ipsec apply: %w", err)
	}
	ids, err := m.sharedIDs(ctx)
	if err != nil {
		return fmt.Errorf("ipsec apply: %w", err)
	}
	secrets := map[string]bool{}
	for _, k := range ids {
		secrets[k] = true
	}

	tunnels := slices.Clone(d.Tunnels)
	slices.SortFunc(tunnels, func(a, b dataplane.Tunnel) int { return cmp.Compare(a.ID, b.ID) })
	var errs []error
	want := map[string]bool{}
	wantSecret := map[string]bool{}
	justLoaded := map[string]bool{}
	keyChanged := map[string]bool{}
	failed := map[string]bool{} // tunnel ids whose keys are not all in place
	for _, t := range tunnels {
		name := ConnName(t.ID)
		want[name] = true
		wantSecret[name] = true
		// Accept-only keys first: when a rotation swaps the primary key,
		// the key it replaces is already accepted (make-before-break).
		if err := m.ensureAccepted(ctx, t, secrets, wantSecret); err != nil {
			failed[t.ID] = true
			errs = append(errs, fmt.Errorf("tunnel %s: %w", t.ID, err))
			continue
		}
		loaded, err := m.ensure(ctx, t, conns, secrets)
		if err != nil {
			delete(m.loaded, name)
			failed[t.ID] = true
			errs = append(errs, fmt.Errorf("tunnel %s: %w", t.ID, err))
		}
		if loaded {
			justLoaded[name] = true
		}
		kfp := m.keyFingerprint(t.PSK)
		if old, ok := m.keyFP[name]; ok && old != kfp && err == nil {
			keyChanged[name] = true
		}
		if err == nil {
			m.keyFP[name] = kfp
		}
	}

	// Unload what we loaded for tunnels that are gone.
	var removed []string
	for _, name := range sortedKeys(conns) {
		if !strings.HasPrefix(name, NamePrefix) || want[name] {
			continue
		}
		if _, err := m.request(ctx, "unload-conn", unloadConn{Name: name}); err != nil {
			errs = append(errs, fmt.Errorf("unload connection %s: %w", name, err))
			continue
		}
		removed = append(removed, name)
		m.log.Info("ipsec connection unloaded", "conn", name)
	}
	for _, id := range sortedKeys(secrets) {
		if !strings.HasPrefix(id, NamePrefix) || wantSecret[id] {
			continue
		}
		if _, err := m.request(ctx, "unload-shared", unloadShared{ID: id}); err != nil {
			errs = append(errs, fmt.Errorf("unload secret %s: %w", id, err))
			// An accept-only key of a live tunnel still loaded: its key
			// set is not the one it was sent.
			conn, _, _ := strings.Cut(id, "#")
			failed[strings.TrimPrefix(conn, NamePrefix)] = true
			continue
		}
		m.log.Info("ipsec secret unloaded", "secret_id", id)
	}
	for name := range m.loaded {
		if !want[name] {
			delete(m.loaded, name)
			delete(m.keyFP, name)
		}
	}
	clear(m.serial)
	for _, t := range tunnels {
		if !failed[t.ID] {
			m.serial[t.ID] = t.PSKSerial
		}
	}

	sas, err := m.listSAs(ctx)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("ipsec apply: %w", err))...)
	}
	for _, name := range removed {
		if len(sas[name]) > 0 {
			m.terminate(ctx, name)
		}
	}
	for _, t := range tunnels {
		name := ConnName(t.ID)
		if keyChanged[name] && !t.Passive && established(sas[name]) {
			// The key rotated: prove the new key now, and make the old one
			// unnecessary, by re-authenticating the IKE_SA. charon runs
			// make-before-break (see StrongswanConf): the new IKE_SA and its
			// CHILD_SA are up before the old ones go. A failure is not
			// fatal: the next IKE_SA uses the new key anyway.
			m.reauth(ctx, name)
			continue
		}
		if t.Passive || justLoaded[name] || !needsInitiate(sas[name]) || m.loaded[name] == ([32]byte{}) {
			continue
		}
		if err := m.initiate(ctx, name); err != nil {
			errs = append(errs, fmt.Errorf("tunnel %s: %w", t.ID, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ipsec apply: %w", err)
	}
	return nil
}

// ensure loads t's secret and connection if charon lacks them or they
// changed; it reports whether the connection was loaded.
func (m *Manager) ensure(ctx context.Context, t dataplane.Tunnel, conns map[string]observedConn, secrets map[string]bool) (bool, error) {
	name := ConnName(t.ID)
	conn, err := ConnMessage(t)
	if err != nil {
		return false, err
	}
	secret := secretOf(t)
	fp := m.fingerprint(conn, secret)
	obs, present := conns[name]
	same := m.loaded[name] == fp
	if same && present && obs.matches(t) && secrets[name] {
		return false, nil
	}
	if !same || !secrets[name] {
		if _, err := m.request(ctx, "load-shared", secret); err != nil {
			return false, fmt.Errorf("load secret %s: %w", name, err)
		}
		m.log.Info("ipsec secret loaded", "secret_id", name)
	}
	if _, err := m.call(ctx, "load-conn", conn); err != nil {
		return false, fmt.Errorf("load connection %s: %w", name, err)
	}
	m.loaded[name] = fp
	m.log.Info("ipsec connection loaded", "conn", name, "tunnel_id", t.ID,
		"local", t.LocalUnderlay.String(), "remote", t.RemoteUnderlay.String(), "was_present", present)
	return true, nil
}

// ensureAccepted loads t's accept-only keys that charon lacks and adds
// their ids to want.
func (m *Manager) ensureAccepted(ctx context.Context, t dataplane.Tunnel, secrets, want map[string]bool) error {
	for _, k := range t.AcceptPSKs {
		id := AcceptSecretID(t.ID, k)
		want[id] = true
		if secrets[id] {
			continue
		}
		msg, err := AcceptSecretMessage(t, k)
		if err != nil {
			return err
		}
		if _, err := m.call(ctx, "load-shared", msg); err != nil {
			return fmt.Errorf("load secret %s: %w", id, err)
		}
		m.log.Info("ipsec accept-only secret loaded", "secret_id", id, "psk_serial", t.PSKSerial)
	}
	return nil
}

// keyFingerprint is a salted hash of a key, kept in memory only.
func (m *Manager) keyFingerprint(key []byte) [32]byte {
	h := sha256.New()
	h.Write(m.salt[:])
	h.Write([]byte("psk\x00"))
	h.Write(key)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// established reports whether the connection has an established IKE_SA.
func established(sas []ikeSA) bool {
	for _, sa := range sas {
		if sa.state == IKEEstablished {
			return true
		}
	}
	return false
}

// reauth asks charon to re-authenticate the connection's IKE_SA
// (asynchronously). Failures are logged only.
func (m *Manager) reauth(ctx context.Context, name string) {
	if _, err := m.request(ctx, "rekey", rekeyRequest{IKE: name, Reauth: true}); err != nil {
		m.log.Warn("ipsec re-authentication failed", "conn", name, "err", err)
		return
	}
	m.log.Info("ipsec IKE_SA re-authentication started (new key)", "conn", name)
}

// needsInitiate is true when no IKE_SA of the connection is being set up
// or established with a usable CHILD_SA: initiating then cannot create a
// duplicate.
func needsInitiate(sas []ikeSA) bool {
	for _, sa := range sas {
		if sa.state.Pending() {
			return false
		}
		if sa.state.Up() && slices.ContainsFunc(sa.children, func(c childSA) bool { return c.state.Usable() }) {
			return false
		}
	}
	return true
}

func (m *Manager) initiate(ctx context.Context, name string) error {
	if _, err := m.request(ctx, "initiate", initiateRequest{Child: ChildName, IKE: name, Timeout: m.initiateTimeout(), LogLevel: -1}); err != nil {
		return fmt.Errorf("initiate %s: %w", name, err)
	}
	m.log.Info("ipsec initiated", "conn", name)
	return nil
}

// initiateTimeout is the initiate request's timeout in ms; -1 returns at
// once (asynchronous).
func (m *Manager) initiateTimeout() int64 {
	if m.initWait > 0 {
		return m.initWait.Milliseconds()
	}
	return -1
}

// terminate closes a connection's IKE_SAs without waiting for the peer.
// Failures are logged only: the connection is gone, DPD ends the rest.
func (m *Manager) terminate(ctx context.Context, name string) {
	if _, err := m.request(ctx, "terminate", terminateRequest{IKE: name, Force: true, Timeout: -1, LogLevel: -1}); err != nil {
		m.log.Warn("ipsec terminate failed", "conn", name, "err", err)
		return
	}
	m.log.Info("ipsec SAs terminated", "conn", name)
}

// Cleanup unloads every "mw-" connection and secret and terminates their
// IKE_SAs.
func (m *Manager) Cleanup(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.loaded)
	clear(m.keyFP)
	clear(m.serial)
	m.last = nil
	conns, err := m.listConns(ctx)
	if err != nil {
		return fmt.Errorf("ipsec cleanup: %w", err)
	}
	var errs []error
	for _, name := range sortedKeys(conns) {
		if !strings.HasPrefix(name, NamePrefix) {
			continue
		}
		if _, err := m.request(ctx, "unload-conn", unloadConn{Name: name}); err != nil {
			errs = append(errs, fmt.Errorf("unload connection %s: %w", name, err))
		}
	}
	if ids, err := m.sharedIDs(ctx); err != nil {
		errs = append(errs, err)
	} else {
		for _, id := range ids {
			if !strings.HasPrefix(id, NamePrefix) {
				continue
			}
			if _, err := m.request(ctx, "unload-shared", unloadShared{ID: id}); err != nil {
				errs = append(errs, fmt.Errorf("unload secret %s: %w", id, err))
			}
		}
	}
	if sas, err := m.listSAs(ctx); err != nil {
		errs = append(errs, err)
	} else {
		for _, name := range sortedKeys(sas) {
			if strings.HasPrefix(name, NamePrefix) {
				m.terminate(ctx, name)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ipsec cleanup: %w", err)
	}
	return nil
}

// Status is the observed IKE state of one tunnel.
type Status struct {
	TunnelID string
	Conn     string
	// Loaded: charon has the connection.
	Loaded bool
	// IKEState and ChildState are the best states among the connection's
	// SAs (IKEEstablished, ChildInstalled, ...); IKENone and ChildNone
	// when there is none.
	IKEState   IKEState
	ChildState ChildState
	IKESAs     int
	ChildSAs   int
	// PSKSerial is the key set serial whose keys charon holds (0: none
	// fully loaded).
	PSKSerial uint64
	// IKEIDs are the unique ids of the connection's IKE_SAs, comma
	// separated in charon's order (a re-authentication replaces them).
	IKEIDs string
	// Counters summed over the CHILD_SAs that have them (installed or
	// rekeying).
	BytesIn, BytesOut, PacketsIn, PacketsOut uint64
}

// Status reports the tunnels of the last Apply, sorted by tunnel id. It
// changes nothing.
func (m *Manager) Status(ctx context.Context) ([]Status, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	conns, sas, err := m.listAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("ipsec status: %w", err)
	}
	return m.statusOf(conns, sas), nil
}

// TidyStatus is Tidy, then Status, from one listing of charon's SAs (the
// IPsec worker's periodic query): the IKE_SAs it ends are left out of
// the status, as the forced terminate destroyed them.
func (m *Manager) TidyStatus(ctx context.Context) ([]Status, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	conns, sas, err := m.listAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("ipsec status: %w", err)
	}
	ended, tidyErr := m.tidy(ctx, sas)
	for name, ids := range ended {
		sas[name] = slices.DeleteFunc(sas[name], func(sa ikeSA) bool { return ids[sa.id] })
	}
	return m.statusOf(conns, sas), tidyErr
}

// listAll lists charon's connections and SAs.
func (m *Manager) listAll(ctx context.Context) (map[string]observedConn, map[string][]ikeSA, error) {
	conns, err := m.listConns(ctx)
	if err != nil {
		return nil, nil, err
	}
	sas, err := m.listSAs(ctx)
	if err != nil {
		return nil, nil, err
	}
	return conns, sas, nil
}

// statusOf is the status of the tunnels of the last Apply from one
// listing; the caller holds mu.
func (m *Manager) statusOf(conns map[string]observedConn, sas map[string][]ikeSA) []Status {
	out := make([]Status, 0, len(m.last))
	for _, t := range m.last {
		name := ConnName(t.ID)
		_, loaded := conns[name]
		s := Status{TunnelID: t.ID, Conn: name, Loaded: loaded, PSKSerial: m.serial[t.ID]}
		for _, sa := range sas[name] {
			s.IKESAs++
			if s.IKEIDs != "" {
				s.IKEIDs += ","
			}
			s.IKEIDs += sa.id
			if rank(ikeOrder, sa.state) > rank(ikeOrder, s.IKEState) {
				s.IKEState = sa.state
			}
			for _, c := range sa.children {
				s.ChildSAs++
				if rank(childOrder, c.state) > rank(childOrder, s.ChildState) {
					s.ChildState = c.state
				}
				s.BytesIn += c.bytesIn
				s.BytesOut += c.bytesOut
				s.PacketsIn += c.packetsIn
				s.PacketsOut += c.packetsOut
			}
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Status) int { return cmp.Compare(a.TunnelID, b.TunnelID) })
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
