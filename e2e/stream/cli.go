package stream

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const usage = `usage:
  meshwan-stream send --dst HOST:PORT [--rate PPS] [--size BYTES] [--dscp N] [--id N] [--count N] [--duration D] [--max-lag D]
  meshwan-stream recv --listen [ADDR]:PORT --out FILE [--id N] [--duration D]
  meshwan-stream report [--min-gap D] FILE...

send paces sequence-numbered UDP packets carrying their send time; recv
appends one 24-byte record per arrival (seq, sent, received; little-endian
Unix nanoseconds) to FILE, which it creates once its socket is bound (so
FILE's existence means "ready"); report summarises record files. send and
recv run until SIGINT/SIGTERM or --duration, then print a summary line.
`

// Main is the meshwan-stream command line (args without the program name).
// It returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "send":
		err = mainSend(ctx, args[1:], stdout)
	case "recv":
		err = mainRecv(ctx, args[1:], stdout)
	case "report":
		err = mainReport(args[1:], stdout)
	default:
		fmt.Fprint(stderr, usage)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "meshwan-stream:", err)
		if errors.Is(err, flag.ErrHelp) {
			return 2
		}
		return 1
	}
	return 0
}

func withDuration(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d > 0 {
		return context.WithTimeout(ctx, d)
	}
	return context.WithCancel(ctx)
}

func mainSend(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	dst := fs.String("dst", "", "destination HOST:PORT (IPv4)")
	rate := fs.Float64("rate", 500, "packets per second")
	size := fs.Int("size", 100, "UDP payload bytes (at least 24)")
	dscp := fs.Int("dscp", 0, "DSCP of the packets (0..63)")
	id := fs.Uint("id", 1, "stream id written into every packet")
	count := fs.Uint64("count", 0, "stop after this many packets (0: no limit)")
	dur := fs.Duration("duration", 0, "stop after this long (0: until a signal)")
	maxLag := fs.Duration("max-lag", 20*time.Millisecond, "restart the schedule rather than burst when this far behind")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ap, err := netip.ParseAddrPort(*dst)
	if err != nil {
		return fmt.Errorf("--dst: %w", err)
	}
	conn, err := net.ListenUDP("udp4", nil)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetWriteBuffer(4 << 20)
	if *dscp != 0 {
		if err := SetDSCP(conn, *dscp); err != nil {
			return err
		}
	}
	ctx, cancel := withDuration(ctx, *dur)
	defer cancel()
	res, err := Send(ctx, conn, SendConfig{Dst: ap, Rate: *rate, Size: *size, ID: uint32(*id), Count: *count, MaxLag: *maxLag})
	fmt.Fprintln(stdout, "meshwan-stream send:", res)
	return err
}

func mainRecv(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("recv", flag.ContinueOnError)
	listen := fs.String("listen", ":5004", "UDP address to listen on")
	out := fs.String("out", "", "record file to write (required)")
	id := fs.Uint("id", 0, "record only this stream id (0: any)")
	dur := fs.Duration("duration", 0, "stop after this long (0: until a signal)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("--out is required")
	}
	addr, err := net.ResolveUDPAddr("udp4", *listen)
	if err != nil {
		return err
	}
	conn, err := net.ListenUDP("udp4", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetReadBuffer(4 << 20)
	f, err := os.OpenFile(*out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	ctx, cancel := withDuration(ctx, *dur)
	defer cancel()
	_, rerr := Receive(ctx, conn, f, RecvConfig{ID: uint32(*id)})
	if err := f.Close(); err != nil && rerr == nil {
		rerr = err
	}
	recs, err := ReadFile(*out)
	if err != nil {
		return errors.Join(rerr, err)
	}
	fmt.Fprintln(stdout, "meshwan-stream recv:", Summarize(recs))
	return rerr
}

func mainReport(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	minGap := fs.Duration("min-gap", 20*time.Millisecond, "list gaps at least this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, path := range fs.Args() {
		recs, err := ReadFile(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %v\n", path, Summarize(recs))
		for _, g := range Gaps(recs) {
			if g.Recv() >= *minGap {
				fmt.Fprintf(stdout, "  gap at %s: %v\n", g.Before.RecvAt().UTC().Format("15:04:05.000"), g)
			}
		}
	}
	return nil
}
