package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
)

// PacketConn is the part of net.PacketConn that Prober and Reflector use;
// a *net.UDPConn satisfies it, and so does FakeNet's conn.
type PacketConn interface {
	ReadFrom(p []byte) (n int, addr net.Addr, err error)
	WriteTo(p []byte, addr net.Addr) (n int, err error)
	Close() error
	SetReadDeadline(t time.Time) error
	LocalAddr() net.Addr
}

// ListenFunc opens a PacketConn bound to local (port 0: any free port).
type ListenFunc func(ctx context.Context, local netip.AddrPort) (PacketConn, error)

// ListenUDP is the real ListenFunc: a UDP socket bound to local.
func ListenUDP(ctx context.Context, local netip.AddrPort) (PacketConn, error) {
	c, err := (&net.ListenConfig{}).ListenPacket(ctx, "udp", local.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.UDPConn), nil
}

// addrPort converts the net.Addr of a received packet, 4in6 unmapped.
func addrPort(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		ap := u.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// FakeNet is an in-memory, channel-backed network of PacketConns for
// tests. Every packet is delivered after Latency unless the receiver's
// queue is full (then it is dropped, like UDP). Used inside a
// testing/synctest bubble it is deterministic. Create it, and its conns,
// inside the bubble.
type FakeNet struct {
	Latency time.Duration // one way

	mu    sync.Mutex
	conns map[netip.AddrPort]*fakeConn
	port  uint16 // last ephemeral port handed out
}

// NewFakeNet returns an empty fake network.
func NewFakeNet(latency time.Duration) *FakeNet {
	return &FakeNet{Latency: latency, conns: map[netip.AddrPort]*fakeConn{}, port: 40000}
}

// Listen is a ListenFunc on the fake network.
func (n *FakeNet) Listen(_ context.Context, local netip.AddrPort) (PacketConn, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if local.Port() == 0 {
		for n.conns[netip.AddrPortFrom(local.Addr(), n.port)] != nil {
			n.port++
		}
		local = netip.AddrPortFrom(local.Addr(), n.port)
	}
	if n.conns[local] != nil {
		return nil, fmt.Errorf("listen %v: address already in use", local)
	}
	c := &fakeConn{net: n, local: local, in: make(chan fakePacket, 64), closed: make(chan struct{}), wake: make(chan struct{})}
	n.conns[local] = c
	return c, nil
}

type fakePacket struct {
	from netip.AddrPort
	b    []byte
}

type fakeConn struct {
	net    *FakeNet
	local  netip.AddrPort
	in     chan fakePacket
	closed chan struct{}
	once   sync.Once

	mu       sync.Mutex
	deadline time.Time
	wake     chan struct{} // closed and replaced when the deadline changes
}

func (c *fakeConn) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(c.local) }

func (c *fakeConn) Close() error {
	c.once.Do(func() {
		close(c.closed)
		c.net.mu.Lock()
		delete(c.net.conns, c.local)
		c.net.mu.Unlock()
	})
	return nil
}

func (c *fakeConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	close(c.wake)
	c.wake = make(chan struct{})
	return nil
}

func (c *fakeConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		c.mu.Lock()
		deadline, wake := c.deadline, c.wake
		c.mu.Unlock()
		var expired <-chan time.Time
		var timer *time.Timer
		if !deadline.IsZero() {
			d := time.Until(deadline)
			if d <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			timer = time.NewTimer(d)
			expired = timer.C
		}
		stop := func() {
			if timer != nil {
				timer.Stop()
			}
		}
		select {
		case pkt := <-c.in:
			stop()
			return copy(p, pkt.b), net.UDPAddrFromAddrPort(pkt.from), nil
		case <-c.closed:
			stop()
			return 0, nil, net.ErrClosed
		case <-expired:
			return 0, nil, os.ErrDeadlineExceeded
		case <-wake:
			stop()
		}
	}
}

func (c *fakeConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	to := addrPort(addr)
	if !to.IsValid() {
		return 0, errors.New("fake: bad address")
	}
	pkt := fakePacket{from: c.local, b: append([]byte(nil), p...)}
	deliver := func() {
		c.net.mu.Lock()
		dst := c.net.conns[to]
		c.net.mu.Unlock()
		if dst == nil {
			return
		}
		select {
		case dst.in <- pkt:
		default: // queue full: dropped
		}
	}
	if c.net.Latency > 0 {
		time.AfterFunc(c.net.Latency, deliver)
	} else {
		deliver()
	}
	return len(p), nil
}
