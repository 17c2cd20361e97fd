package ipsec

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/strongswan/govici/vici"
)

// Session is the narrow view of a VICI session this package uses: plain
// commands, and streamed commands collected into a slice. *ViciSession is
// the real one; tests use an in-memory charon.
//
// Why not govici's CommandRequest/StreamedCommandRequest: v0.8.0
// deprecates both and neither takes a context. ViciSession uses Call
// (context-aware) and its own streaming, see Stream.
type Session interface {
	// Call runs cmd. A command charon refused returns its response and a
	// non-nil error; a broken connection returns a nil response.
	Call(ctx context.Context, cmd string, in *vici.Message) (*vici.Message, error)
	// Stream runs cmd and returns every event message it raised.
	Stream(ctx context.Context, cmd, event string, in *vici.Message) ([]*vici.Message, error)
	Close() error
}

// eventBuffer bounds events queued between govici's reader and Stream's
// collector. govici drops events when a subscriber's channel is full; the
// collector drains concurrently, so this only has to absorb bursts.
const eventBuffer = 4096

// ViciSession is a Session over a unix socket to charon. Calls are
// serialized by mu: one command in flight at a time.
type ViciSession struct {
	mu         sync.Mutex
	s          *vici.Session
	events     chan vici.Event
	subscribed map[string]bool
	broken     error
}

var _ Session = (*ViciSession)(nil)

// Dial connects to the VICI socket at path (e.g. Charon.SocketPath(), or
// /var/run/charon.vici for a system charon).
func Dial(ctx context.Context, path string) (*ViciSession, error) {
	s, err := vici.NewSession(
		vici.WithSocketPath(path),
		// govici dials with context.Background; bind the dial to ctx.
		vici.WithDialContext(func(_ context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("dial vici %s: %w", path, err)
	}
	v := &ViciSession{s: s, events: make(chan vici.Event, eventBuffer), subscribed: map[string]bool{}}
	s.NotifyEvents(v.events)
	return v, nil
}

// Call implements Session.
func (v *ViciSession) Call(ctx context.Context, cmd string, in *vici.Message) (*vici.Message, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.broken != nil {
		return nil, v.broken
	}
	res, err := v.s.Call(ctx, cmd, in)
	if err != nil && res == nil {
		v.broken = err
	}
	return res, err
}

// Stream implements Session.
//
// Pitfall met with govici v0.8.0 and charon 5.9.8: CallStreaming waits
// with a select over its event and response channels, so when both are
// ready it may take the command's final response before the last events.
// The stream then ends short, and the left-over events are handed to the
// next command as its "response" ("vici: unexpected response type: 7").
// Instead, the event is subscribed once per session and delivered to our
// own channel, and the command runs as a plain Call. govici's reader
// handles packets in order, so every event of the command is in our
// channel (or was dropped, see eventBuffer) before Call returns: draining
// the channel after Call returns collects them all. A command interrupted
// by ctx may leave events behind, so the session is then marked broken.
func (v *ViciSession) Stream(ctx context.Context, cmd, event string, in *vici.Message) ([]*vici.Message, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.broken != nil {
		return nil, v.broken
	}
	if !v.subscribed[event] {
		if err := v.s.Subscribe(event); err != nil {
			v.broken = fmt.Errorf("subscribe %s: %w", event, err)
			return nil, v.broken
		}
		v.subscribed[event] = true
	}
	v.drain(event) // nothing should be queued; never mix commands

	stop := make(chan struct{})
	got := make(chan []*vici.Message, 1)
	go func() {
		var msgs []*vici.Message
		for {
			select {
			case ev, ok := <-v.events:
				if !ok {
					got <- msgs
					return
				}
				if ev.Name == event {
					msgs = append(msgs, ev.Message)
				}
			case <-stop:
				got <- append(msgs, v.drain(event)...)
				return
			}
		}
	}()
	_, err := v.s.Call(ctx, cmd, in)
	close(stop)
	msgs := <-got
	if err != nil {
		v.broken = fmt.Errorf("streamed %s failed earlier: %w", cmd, err)
		return nil, err
	}
	return msgs, nil
}

// drain takes what is queued now, keeping messages of event.
func (v *ViciSession) drain(event string) []*vici.Message {
	var msgs []*vici.Message
	for {
		select {
		case ev, ok := <-v.events:
			if !ok {
				return msgs
			}
			if ev.Name == event {
				msgs = append(msgs, ev.Message)
			}
		default:
			return msgs
		}
	}
}

// Close implements Session.
func (v *ViciSession) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.broken == nil {
		v.broken = errors.New("vici session closed")
	}
	return v.s.Close()
}
