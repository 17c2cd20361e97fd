package ipsec

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/strongswan/govici/vici"
)

// FakeCharon is an in-memory charon behind the Session interface, for unit
// tests (here and in the agent). It answers the commands the Manager uses
// in charon's formats (as recorded from charon 5.9.8), logs every command
// with the name it acts on, can fail chosen commands, and prints its state
// as sorted text. The VM lab proves the real charon.
type FakeCharon struct {
	mu      sync.Mutex
	conns   map[string]connConfig // name -> as loaded
	secrets map[string]sharedSecret
	sas     map[string][]ikeSA
	calls   []string
	fail    map[string]error // command (or "command name") -> error
	broken  bool             // next command fails like a dead socket
	rekeys  []string         // "name reauth=yes" per rekey command
	// ikeIDs is the last IKE_SA unique id given (see number).
	ikeIDs int
	dials  int
}

var errBroken = errors.New("vici: error waiting for response: io: read/write on closed pipe")

// NewFakeCharon returns a fake charon with nothing loaded.
func NewFakeCharon() *FakeCharon {
	return &FakeCharon{conns: map[string]connConfig{}, secrets: map[string]sharedSecret{}, sas: map[string][]ikeSA{}, fail: map[string]error{}}
}

// Dial is the Manager's dial function.
func (f *FakeCharon) Dial(ctx context.Context) (Session, error) { return f.dial(ctx) }

// TakeCalls returns the commands run since the last call ("cmd name").
func (f *FakeCharon) TakeCalls() []string { return f.takeCalls() }

// Secrets lists the loaded secrets as "id owners=[...] key=<n>" lines,
// sorted, with the key bytes only as the index into keys (-1 when the key
// is not in keys): tests see which key each secret holds without printing
// any.
func (f *FakeCharon) Secrets(keys ...[]byte) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for id, s := range f.secrets {
		k := -1
		for i, key := range keys {
			if s.Data == string(key) {
				k = i
			}
		}
		out = append(out, fmt.Sprintf("%s owners=%v key=%d", id, s.Owners, k))
	}
	slices.Sort(out)
	return out
}

// Rekeys returns (and clears) the rekey commands run.
func (f *FakeCharon) Rekeys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.rekeys
	f.rekeys = nil
	return r
}

// SetSA sets the IKE_SA state of a connection (with one installed child),
// as after a successful negotiation.
func (f *FakeCharon) SetSA(name string, state IKEState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sas[name] = []ikeSA{{state: state, children: []childSA{{name: ChildName, state: ChildInstalled}}}}
}

// dial counts the dial and clears a simulated broken socket.
func (f *FakeCharon) dial(context.Context) (Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dials++
	f.broken = false
	return f, nil
}

func (f *FakeCharon) Close() error { return nil }

func (f *FakeCharon) takeCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

// writes filters a call log down to configuration changes and actions.
func writes(calls []string) []string {
	var w []string
	for _, c := range calls {
		if !strings.HasPrefix(c, "list-") && !strings.HasPrefix(c, "get-shared") {
			w = append(w, c)
		}
	}
	return w
}

func (f *FakeCharon) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var lines []string
	for name, c := range f.conns {
		child := c.Children[ChildName]
		lines = append(lines, fmt.Sprintf("conn %s %v->%v ike %v esp %v start %v",
			name, c.LocalAddrs, c.RemoteAddrs, c.Proposals, child.ESPProposals, child.StartAction))
	}
	for id, s := range f.secrets {
		lines = append(lines, fmt.Sprintf("secret %s %s owners %v key %d bytes", id, s.Type, s.Owners, len(s.Data)))
	}
	for name, list := range f.sas {
		for _, sa := range list {
			lines = append(lines, fmt.Sprintf("sa %s %s children %d", name, sa.state, len(sa.children)))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// fakeReply is charon's answer to a command; fakeVersion to "version".
type fakeReply struct {
	Success bool   `vici:"success"`
	Errmsg  string `vici:"errmsg"`
}

type fakeVersion struct {
	Daemon  string `vici:"daemon"`
	Version string `vici:"version"`
}

// mustMarshal marshals the fake's own answer types, which always marshal.
func mustMarshal(v any) *vici.Message {
	m, err := vici.MarshalMessage(v)
	if err != nil {
		panic(err)
	}
	return m
}

func reply(ok bool, errmsg string) *vici.Message {
	if ok {
		errmsg = ""
	}
	return mustMarshal(fakeReply{Success: ok, Errmsg: errmsg})
}

func (f *FakeCharon) Call(ctx context.Context, cmd string, in *vici.Message) (*vici.Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	req, err := parseRequest(cmd, in)
	if err != nil {
		return reply(false, err.Error()), fmt.Errorf("vici: command failed: %w", err)
	}
	name := req.name()
	entry := strings.TrimSpace(cmd + " " + name)
	f.calls = append(f.calls, entry)
	if f.broken {
		return nil, errBroken
	}
	for _, k := range []string{entry, cmd} {
		if err := f.fail[k]; err != nil {
			return reply(false, err.Error()), fmt.Errorf("vici: command failed: %w", err)
		}
	}
	switch cmd {
	case "version":
		return mustMarshal(fakeVersion{Daemon: "charon", Version: "5.9.8"}), nil
	case "load-conn":
		conn := req.conn[name]
		old, had := f.conns[name]
		f.conns[name] = conn
		// charon 5.9 (vici_config.c merge_config): an identical config is an
		// update that keeps every SA; a changed one (connection or child)
		// undoes the old config's start action, which for "start" closes
		// the connection's IKE_SAs, then runs the new one's (initiate).
		if had && !reflect.DeepEqual(old, conn) && strings.Contains(old.Children[ChildName].StartAction, "start") {
			delete(f.sas, name)
		}
		if strings.Contains(conn.Children[ChildName].StartAction, "start") && len(f.sas[name]) == 0 {
			f.sas[name] = []ikeSA{{state: IKEConnecting}}
		}
		return reply(true, ""), nil
	case "unload-conn":
		if _, ok := f.conns[name]; !ok {
			return reply(false, "unload: connection '"+name+"' not found"), errors.New("vici: command failed")
		}
		delete(f.conns, name)
		return reply(true, ""), nil
	case "load-shared":
		f.secrets[name] = req.secret
		return reply(true, ""), nil
	case "unload-shared":
		delete(f.secrets, name)
		return reply(true, ""), nil
	case "get-shared":
		return vici.MarshalMessage(sharedKeys{Keys: sortedKeys(f.secrets)})
	case "initiate":
		if _, ok := f.conns[name]; !ok {
			return reply(false, "CHILD_SA config 'gre' not found"), errors.New("vici: command failed")
		}
		f.sas[name] = append(f.sas[name], ikeSA{state: IKEConnecting})
		return reply(true, ""), nil
	case "rekey":
		if len(f.sas[name]) == 0 {
			return reply(false, "no matching IKE_SA found"), errors.New("vici: command failed")
		}
		f.rekeys = append(f.rekeys, fmt.Sprintf("%s reauth=%v", name, yesNo(req.rekey.Reauth)))
		return reply(true, ""), nil
	case "terminate":
		if id := req.terminate.IKEID; id != "" {
			if !f.terminateByID(id) {
				return reply(false, "no matching SAs to terminate found"), errors.New("vici: command failed")
			}
			return reply(true, ""), nil
		}
		if len(f.sas[name]) == 0 {
			return reply(false, "no matching SAs to terminate found"), errors.New("vici: command failed")
		}
		delete(f.sas, name)
		return reply(true, ""), nil
	}
	return reply(false, "unknown command "+cmd), errors.New("vici: unknown command")
}

// terminateByID removes the IKE_SA with the given unique id.
func (f *FakeCharon) terminateByID(ikeID string) bool {
	for name, list := range f.sas {
		for i, sa := range list {
			if sa.id == ikeID {
				f.sas[name] = slices.Delete(list, i, i+1)
				return true
			}
		}
	}
	return false
}

// number gives every IKE_SA without a unique id the next one, as charon
// numbers them, in listing order.
func (f *FakeCharon) number() {
	for _, name := range sortedKeys(f.sas) {
		for i := range f.sas[name] {
			sa := &f.sas[name][i]
			if sa.id == "" {
				f.ikeIDs++
				sa.id = fmt.Sprint(f.ikeIDs)
			}
		}
	}
}

func (f *FakeCharon) Stream(ctx context.Context, cmd, event string, in *vici.Message) ([]*vici.Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, cmd)
	if f.broken {
		return nil, errBroken
	}
	if err := f.fail[cmd]; err != nil {
		return nil, err
	}
	var out []*vici.Message
	add := func(name string, v any) error {
		m, err := vici.MarshalMessage(map[string]any{name: v})
		out = append(out, m)
		return err
	}
	switch cmd {
	case "list-conns":
		for _, name := range sortedKeys(f.conns) {
			c := f.conns[name]
			children := map[string]fakeListedChild{}
			for k := range c.Children {
				children[k] = fakeListedChild{Mode: "TRANSPORT"}
			}
			if err := add(name, fakeListedConn{LocalAddrs: c.LocalAddrs, RemoteAddrs: c.RemoteAddrs, Version: "IKEv2", Children: children}); err != nil {
				return nil, err
			}
		}
	case "list-sas":
		f.number()
		for _, name := range sortedKeys(f.sas) {
			for _, sa := range f.sas[name] {
				l := fakeListedIKE{UniqueID: sa.id, State: sa.state, Children: map[string]fakeListedChildSA{}}
				for i, c := range sa.children {
					lc := fakeListedChildSA{Name: c.name, State: c.state}
					if c.state == ChildInstalled {
						lc.BytesIn, lc.BytesOut, lc.PacketsIn, lc.PacketsOut = &c.bytesIn, &c.bytesOut, &c.packetsIn, &c.packetsOut
					}
					l.Children[fmt.Sprintf("%s-%d", c.name, i+1)] = lc
				}
				if err := add(name, l); err != nil {
					return nil, err
				}
			}
		}
	default:
		return nil, errors.New("unknown stream " + cmd)
	}
	return out, nil
}

// fakeRequest is a request the fake parsed; name is what it acts on.
type fakeRequest struct {
	conn      map[string]connConfig
	secret    sharedSecret
	unload    unloadConn
	initiate  initiateRequest
	terminate terminateRequest
	rekey     rekeyRequest
	cmd       string
}

func parseRequest(cmd string, in *vici.Message) (fakeRequest, error) {
	r := fakeRequest{cmd: cmd, conn: map[string]connConfig{}}
	if in == nil {
		return r, nil
	}
	var target any
	switch cmd {
	case "load-conn":
		target = r.conn
	case "load-shared", "unload-shared":
		target = &r.secret
	case "unload-conn":
		target = &r.unload
	case "initiate":
		target = &r.initiate
	case "terminate":
		target = &r.terminate
	case "rekey":
		target = &r.rekey
	default:
		return r, nil
	}
	if err := vici.UnmarshalMessage(in, target); err != nil {
		return r, fmt.Errorf("%s request: %w", cmd, err)
	}
	if cmd == "load-conn" && len(r.conn) != 1 {
		return r, fmt.Errorf("load-conn request with %d connections", len(r.conn))
	}
	return r, nil
}

func (r fakeRequest) name() string {
	switch r.cmd {
	case "load-conn":
		for name := range r.conn {
			return name
		}
	case "load-shared", "unload-shared":
		return r.secret.ID
	case "unload-conn":
		return r.unload.Name
	case "initiate":
		return r.initiate.IKE
	case "terminate":
		if r.terminate.IKEID != "" {
			return "ike-id=" + r.terminate.IKEID
		}
		return r.terminate.IKE
	case "rekey":
		return r.rekey.IKE
	}
	return ""
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// fakeListedConn and fakeListedChild add fields charon lists that the
// Manager does not read, so the fake's answers have charon's shape.
type fakeListedConn struct {
	LocalAddrs  []string                   `vici:"local_addrs"`
	RemoteAddrs []string                   `vici:"remote_addrs"`
	Version     string                     `vici:"version"`
	Children    map[string]fakeListedChild `vici:"children"`
}

type fakeListedChild struct {
	Mode string `vici:"mode"`
}

// fakeListedIKE and fakeListedChildSA are list-sa events as charon sends
// them: the counters (pointers: govici leaves nil out) only for an
// installed CHILD_SA.
type fakeListedIKE struct {
	UniqueID string                       `vici:"uniqueid"`
	State    IKEState                     `vici:"state"`
	Children map[string]fakeListedChildSA `vici:"child-sas"`
}

type fakeListedChildSA struct {
	Name       string     `vici:"name"`
	State      ChildState `vici:"state"`
	BytesIn    *uint64    `vici:"bytes-in"`
	PacketsIn  *uint64    `vici:"packets-in"`
	BytesOut   *uint64    `vici:"bytes-out"`
	PacketsOut *uint64    `vici:"packets-out"`
}
