package stream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// SendConfig configures Send.
type SendConfig struct {
	Dst  netip.AddrPort
	Rate float64 // packets per second, > 0
	Size int     // UDP payload bytes; at least HeaderLen
	ID   uint32
	// Count stops after this many packets (0: until ctx ends).
	Count uint64
	// MaxLag is how far behind its schedule the sender may fall and
	// still catch up by sending at once (default 20 ms, 10 packets at
	// 500 pps); further behind, it restarts the schedule from now instead
	// of bursting. Bursts after a stall of the emulated VM overflow
	// queues on the way and would show up as losses the path did not
	// cause.
	MaxLag time.Duration
}

// SendResult is what Send did.
type SendResult struct {
	Sent, Errors uint64
	// MaxLate is the longest a packet left after its scheduled time (the
	// sender's own stalls; they delay packets but skip no sequence number).
	MaxLate time.Duration
	// Resyncs counts how often the sender fell more than MaxLag behind
	// and restarted its schedule instead of bursting to catch up.
	Resyncs int
}

func (r SendResult) String() string {
	return fmt.Sprintf("sent %d, %d send errors, longest sender stall %v, %d schedule resyncs", r.Sent, r.Errors, r.MaxLate, r.Resyncs)
}

// SetDSCP sets the DSCP of the packets conn sends (IPv4).
func SetDSCP(conn *net.UDPConn, dscp int) error {
	if dscp < 0 || dscp > 63 {
		return fmt.Errorf("dscp %d out of 0..63", dscp)
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TOS, dscp<<2) }); err != nil {
		return err
	}
	return serr
}

// Send paces packets to cfg.Dst at cfg.Rate until ctx ends or Count
// packets are sent. Packet n is due at start + n/Rate; a late sender sends
// at once (catching up) unless it is more than MaxLag behind, when it
// restarts the schedule. Sequence numbers never skip. Send errors (no route, ...) are counted,
// not fatal: the stream must survive the outages it measures.
func Send(ctx context.Context, conn *net.UDPConn, cfg SendConfig) (SendResult, error) {
	var res SendResult
	if cfg.Rate <= 0 {
		return res, errors.New("stream: rate must be positive")
	}
	if cfg.MaxLag <= 0 {
		cfg.MaxLag = 20 * time.Millisecond
	}
	if cfg.Size < HeaderLen {
		cfg.Size = HeaderLen
	}
	interval := time.Duration(float64(time.Second) / cfg.Rate)
	dst := net.UDPAddrFromAddrPort(cfg.Dst)
	buf := make([]byte, cfg.Size)
	start := time.Now()
	var sched uint64 // packets since start
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for seq := uint64(0); cfg.Count == 0 || seq < cfg.Count; seq++ {
		due := start.Add(time.Duration(sched) * interval)
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return res, nil
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return res, nil
		}
		now := time.Now()
		late := now.Sub(due)
		res.MaxLate = max(res.MaxLate, late)
		if late > cfg.MaxLag {
			start, sched, res.Resyncs = now, 0, res.Resyncs+1
		}
		Packet{ID: cfg.ID, Seq: seq, Sent: time.Now().UnixNano()}.Encode(buf)
		if _, err := conn.WriteToUDP(buf, dst); err != nil {
			res.Errors++
		} else {
			res.Sent++
		}
		sched++
	}
	return res, nil
}
