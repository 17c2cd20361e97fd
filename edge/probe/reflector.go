package probe

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"time"
)

// DefaultPort is the UDP port Reflectors listen on.
const DefaultPort = 7402

// Reflector answers probe requests on one PacketConn: each valid request
// goes back to its sender as a reply with the same session, sequence and
// sender timestamp, plus the reflector's receive and transmit times.
// Anything else is dropped (counted, logged at debug level).
type Reflector struct {
	conn  PacketConn
	log   *slog.Logger
	epoch time.Time

	answered, rejected atomic.Uint64
}

// NewReflector returns a Reflector on conn; Run takes ownership of conn.
// A nil log discards.
func NewReflector(conn PacketConn, log *slog.Logger) *Reflector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reflector{conn: conn, log: log, epoch: time.Now()}
}

// Counts returns the numbers of requests answered and packets rejected.
func (r *Reflector) Counts() (answered, rejected uint64) {
	return r.answered.Load(), r.rejected.Load()
}

// Run answers requests until ctx ends, then closes the conn and returns
// nil; it returns an error if reading fails for another reason. It owns
// one helper goroutine, which has ended when Run returns.
func (r *Reflector) Run(ctx context.Context) error {
	stop := closeOnDone(ctx, r.conn)
	defer stop()
	buf := make([]byte, 2*PacketLen) // larger, so oversize packets are seen as such
	for {
		n, from, err := r.conn.ReadFrom(buf)
		rx := time.Since(r.epoch)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		req, err := Unmarshal(buf[:n])
		if err == nil && req.Type != TypeRequest {
			err = ErrType
		}
		if err != nil {
			r.rejected.Add(1)
			r.log.Debug("probe packet rejected", "from", from.String(), "err", err)
			continue
		}
		reply := req
		reply.Type = TypeReply
		reply.ReflectRx = int64(rx)
		reply.ReflectTx = int64(time.Since(r.epoch))
		b, _ := reply.Marshal(buf[PacketLen:PacketLen]) // valid by construction
		if _, err := r.conn.WriteTo(b, from); err != nil {
			r.log.Debug("probe reply not sent", "to", from.String(), "err", err)
			continue
		}
		r.answered.Add(1)
	}
}

// closeOnDone closes conn when ctx ends or stop is called, whichever is
// first; stop waits for its goroutine to end.
func closeOnDone(ctx context.Context, conn PacketConn) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-ctx.Done():
		case <-quit:
		}
		conn.Close()
	}()
	return func() { close(quit); <-done }
}
