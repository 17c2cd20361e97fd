package stream

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// RecvConfig configures Receive.
type RecvConfig struct {
	// ID accepts only this stream's packets (0: any stream).
	ID uint32
	// Flush is the longest a record waits before it is written (default
	// 100 ms), so a reader of the file sees arrivals that recent.
	Flush time.Duration
}

// Receive records every stream packet arriving on conn to w, in arrival
// order (see RecordLen), until ctx ends, and returns how many it recorded.
// Records are written in whole batches at least every cfg.Flush.
func Receive(ctx context.Context, conn *net.UDPConn, w io.Writer, cfg RecvConfig) (int, error) {
	if cfg.Flush <= 0 {
		cfg.Flush = 100 * time.Millisecond
	}
	var (
		n       int
		out     []byte
		lastOut = time.Now()
		buf     = make([]byte, 65536)
	)
	flush := func() error {
		lastOut = time.Now()
		if len(out) == 0 {
			return nil
		}
		_, err := w.Write(out)
		out = out[:0]
		return err
	}
	for {
		if ctx.Err() != nil {
			return n, flush()
		}
		if err := conn.SetReadDeadline(lastOut.Add(cfg.Flush)); err != nil {
			return n, err
		}
		m, _, err := conn.ReadFromUDP(buf)
		recv := time.Now().UnixNano()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if err := flush(); err != nil {
					return n, err
				}
				continue
			}
			return n, err
		}
		p, err := Decode(buf[:m])
		if err != nil || (cfg.ID != 0 && p.ID != cfg.ID) {
			continue
		}
		out = AppendRecord(out, Record{Seq: p.Seq, Sent: p.Sent, Recv: recv})
		n++
		if time.Since(lastOut) >= cfg.Flush {
			if err := flush(); err != nil {
				return n, err
			}
		}
	}
}
