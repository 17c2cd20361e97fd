package ipsec

import (
	"context"
	"errors"
	"fmt"
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
	conns   map[string]*vici.Message // name -> section as loaded
	secrets map[string]fakeSecret
	sas     map[string][]ikeSA
	calls   []string
	fail    map[string]error // command (or "command name") -> error
	broken  bool             // next command fails like a dead socket
	rekeys  []string         // "name reauth=yes" per rekey command
	dials   int
}

type fakeSecret struct {
	typ    string
	data   string
	owners []string
}

var errBroken = errors.New("vici: error waiting for response: io: read/write on closed pipe")

// NewFakeCharon returns a fake charon with nothing loaded.
func NewFakeCharon() *FakeCharon {
	return &FakeCharon{conns: map[string]*vici.Message{}, secrets: map[string]fakeSecret{}, sas: map[string][]ikeSA{}, fail: map[string]error{}}
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
			if s.data == string(key) {
				k = i
			}
		}
		out = append(out, fmt.Sprintf("%s owners=%v key=%d", id, s.owners, k))
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
func (f *FakeCharon) SetSA(name, state string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sas[name] = []ikeSA{{state: state, children: []childSA{{name: ChildName, state: "INSTALLED"}}}}
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
		child := c.Get("children").(*vici.Message).Get(ChildName).(*vici.Message)
		lines = append(lines, fmt.Sprintf("conn %s %v->%v ike %v esp %v start %v",
			name, strs(c.Get("local_addrs")), strs(c.Get("remote_addrs")), strs(c.Get("proposals")),
			strs(child.Get("esp_proposals")), child.Get("start_action")))
	}
	for id, s := range f.secrets {
		lines = append(lines, fmt.Sprintf("secret %s %s owners %v key %d bytes", id, s.typ, s.owners, len(s.data)))
	}
	for name, list := range f.sas {
		for _, sa := range list {
			lines = append(lines, fmt.Sprintf("sa %s %s children %d", name, sa.state, len(sa.children)))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func reply(ok bool, errmsg string) *vici.Message {
	m := vici.NewMessage()
	if ok {
		_ = m.Set("success", "yes")
	} else {
		_ = m.Set("success", "no")
		_ = m.Set("errmsg", errmsg)
	}
	return m
}

func (f *FakeCharon) Call(ctx context.Context, cmd string, in *vici.Message) (*vici.Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	name := ""
	if in != nil {
		switch cmd {
		case "load-conn":
			name = in.Keys()[0]
		case "unload-conn":
			name = str(in.Get("name"))
		case "load-shared", "unload-shared":
			name = str(in.Get("id"))
		case "initiate", "terminate", "rekey":
			name = str(in.Get("ike"))
		}
	}
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
		m := vici.NewMessage()
		_ = m.Set("daemon", "charon")
		_ = m.Set("version", "5.9.8")
		return m, nil
	case "load-conn":
		sec := in.Get(name).(*vici.Message)
		old, had := f.conns[name]
		f.conns[name] = sec
		child := sec.Get("children").(*vici.Message).Get(ChildName).(*vici.Message)
		// charon 5.9 (vici_config.c merge_config): an identical config is an
		// update that keeps every SA; a changed one (connection or child)
		// undoes the old config's start action, which for "start" closes
		// the connection's IKE_SAs, then runs the new one's (initiate).
		if had && old.String() != sec.String() {
			oldChild := old.Get("children").(*vici.Message).Get(ChildName).(*vici.Message)
			if strings.Contains(str(oldChild.Get("start_action")), "start") {
				delete(f.sas, name)
			}
		}
		if strings.Contains(str(child.Get("start_action")), "start") && len(f.sas[name]) == 0 {
			f.sas[name] = []ikeSA{{state: "CONNECTING"}}
		}
		return reply(true, ""), nil
	case "unload-conn":
		if _, ok := f.conns[name]; !ok {
			return reply(false, "unload: connection '"+name+"' not found"), errors.New("vici: command failed")
		}
		delete(f.conns, name)
		return reply(true, ""), nil
	case "load-shared":
		f.secrets[name] = fakeSecret{typ: str(in.Get("type")), data: str(in.Get("data")), owners: strs(in.Get("owners"))}
		return reply(true, ""), nil
	case "unload-shared":
		delete(f.secrets, name)
		return reply(true, ""), nil
	case "get-shared":
		var keys []string
		for k := range f.secrets {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		m := vici.NewMessage()
		_ = m.Set("keys", keys)
		return m, nil
	case "initiate":
		if _, ok := f.conns[name]; !ok {
			return reply(false, "CHILD_SA config 'gre' not found"), errors.New("vici: command failed")
		}
		f.sas[name] = append(f.sas[name], ikeSA{state: "CONNECTING"})
		return reply(true, ""), nil
	case "rekey":
		if len(f.sas[name]) == 0 {
			return reply(false, "no matching IKE_SA found"), errors.New("vici: command failed")
		}
		f.rekeys = append(f.rekeys, name+" reauth="+str(in.Get("reauth")))
		return reply(true, ""), nil
	case "terminate":
		if len(f.sas[name]) == 0 {
			return reply(false, "no matching SAs to terminate found"), errors.New("vici: command failed")
		}
		delete(f.sas, name)
		return reply(true, ""), nil
	}
	return reply(false, "unknown command "+cmd), errors.New("vici: unknown command")
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
	switch cmd {
	case "list-conns":
		for _, name := range sortedKeys(f.conns) {
			c := f.conns[name]
			children := vici.NewMessage()
			for _, k := range c.Get("children").(*vici.Message).Keys() {
				ch := vici.NewMessage()
				_ = ch.Set("mode", "TRANSPORT")
				_ = children.Set(k, ch)
			}
			sec := vici.NewMessage()
			_ = sec.Set("local_addrs", strs(c.Get("local_addrs")))
			_ = sec.Set("remote_addrs", strs(c.Get("remote_addrs")))
			_ = sec.Set("version", "IKEv2")
			_ = sec.Set("children", children)
			m := vici.NewMessage()
			_ = m.Set(name, sec)
			out = append(out, m)
		}
	case "list-sas":
		id := 0
		for _, name := range sortedKeys(f.sas) {
			for _, sa := range f.sas[name] {
				id++
				sec := vici.NewMessage()
				_ = sec.Set("uniqueid", fmt.Sprint(id))
				_ = sec.Set("state", sa.state)
				cs := vici.NewMessage()
				for i, c := range sa.children {
					cm := vici.NewMessage()
					_ = cm.Set("name", c.name)
					_ = cm.Set("state", c.state)
					if c.state == "INSTALLED" {
						_ = cm.Set("bytes-in", fmt.Sprint(c.bytesIn))
						_ = cm.Set("packets-in", fmt.Sprint(c.packetsIn))
						_ = cm.Set("bytes-out", fmt.Sprint(c.bytesOut))
						_ = cm.Set("packets-out", fmt.Sprint(c.packetsOut))
					}
					_ = cs.Set(fmt.Sprintf("%s-%d", c.name, i+1), cm)
				}
				_ = sec.Set("child-sas", cs)
				m := vici.NewMessage()
				_ = m.Set(name, sec)
				out = append(out, m)
			}
		}
	default:
		return nil, errors.New("unknown stream " + cmd)
	}
	return out, nil
}
