package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/meshwan/meshwan/e2e/stream"
)

// StreamSpec describes a measurement stream (package e2e/stream) from one
// site's LAN host to another's.
type StreamSpec struct {
	From, To string  // site names
	Port     int     // UDP destination port (default 5004)
	Rate     float64 // packets per second (default 500)
	Size     int     // UDP payload bytes (default 100)
	DSCP     int
	ID       uint32 // stream id (default: the port)
}

// Stream is a running measurement stream: a meshwan-stream receiver on
// To's LAN host recording into a file on tmpfs, and a sender on From's.
type Stream struct {
	Spec StreamSpec
	Path string // the record file

	lab        *Lab
	tail       stream.Tail
	recs       []stream.Record
	send, recv *proc
	stopped    bool
	stopErr    error
}

// proc is a supervised child process with its output kept in memory.
type proc struct {
	cmd  *exec.Cmd
	out  lockedBuffer
	done chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *Lab) startTool(ns string, args ...string) (*proc, error) {
	if len(l.StreamTool) == 0 {
		return nil, errors.New("lab: no StreamTool")
	}
	argv := append([]string{"netns", "exec", ns}, l.StreamTool...)
	p := &proc{cmd: exec.Command("ip", append(argv, args...)...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), l.StreamEnv...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM (ip netns exec execs the tool, so the child is the
// tool itself) and waits, then SIGKILLs the group after a while.
func (p *proc) stop() {
	if p == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

func (p *proc) kill() {
	if p == nil {
		return
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// StartStream starts a receiver on spec.To's LAN host, waits until it is
// bound, then starts the sender on spec.From's.
func (l *Lab) StartStream(ctx context.Context, spec StreamSpec) (*Stream, error) {
	from, ok1 := l.Sites[spec.From]
	to, ok2 := l.Sites[spec.To]
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("lab: stream between unknown sites %q -> %q", spec.From, spec.To)
	}
	if spec.Port == 0 {
		spec.Port = 5004
	}
	if spec.Rate == 0 {
		spec.Rate = 500
	}
	if spec.Size == 0 {
		spec.Size = 100
	}
	if spec.ID == 0 {
		spec.ID = uint32(spec.Port)
	}
	s := &Stream{Spec: spec, lab: l,
		Path: filepath.Join(os.TempDir(), fmt.Sprintf("mw-stream-%s-%s-%d-%d.rec", spec.From, spec.To, spec.Port, time.Now().UnixNano()))}
	s.tail.Path = s.Path
	id := strconv.FormatUint(uint64(spec.ID), 10)
	var err error
	if s.recv, err = l.startTool(to.LANNS, "recv", "--listen", ":"+strconv.Itoa(spec.Port), "--out", s.Path, "--id", id); err != nil {
		return nil, err
	}
	// The receiver creates its file once its socket is bound.
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(s.Path); err == nil {
			break
		}
		if s.recv.exited() || time.Now().After(deadline) || ctx.Err() != nil {
			s.recv.kill()
			return nil, fmt.Errorf("stream receiver on %s did not start: %s", to.LANNS, s.recv.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.send, err = l.startTool(from.LANNS, "send", "--dst", fmt.Sprintf("%s:%d", to.Host, spec.Port),
		"--rate", strconv.FormatFloat(spec.Rate, 'f', -1, 64), "--size", strconv.Itoa(spec.Size), "--dscp", strconv.Itoa(spec.DSCP), "--id", id)
	if err != nil {
		s.recv.kill()
		return nil, err
	}
	l.mu.Lock()
	l.streams = append(l.streams, s)
	l.mu.Unlock()
	return s, nil
}

// Records returns every record received so far, in arrival order. The
// slice must not be modified.
func (s *Stream) Records() ([]stream.Record, error) {
	recs, err := s.tail.Read()
	if err != nil {
		return s.recs, err
	}
	s.recs = slices.Clip(append(s.recs, recs...))
	return s.recs, nil
}

// Running reports an error if the sender or receiver ended.
func (s *Stream) Running() error {
	if s.send.exited() {
		return fmt.Errorf("stream sender %s -> %s ended: %s", s.Spec.From, s.Spec.To, s.send.out.String())
	}
	if s.recv.exited() {
		return fmt.Errorf("stream receiver %s -> %s ended: %s", s.Spec.From, s.Spec.To, s.recv.out.String())
	}
	return nil
}

// Stop stops the sender, waits until packets in flight have arrived (no
// new record for 500 ms, at most 10 s), stops the receiver and returns
// every record. The tools' summary lines go to the lab's log, and the
// record file is copied next to the sender site's edge log. Calling it
// again returns the same.
func (s *Stream) Stop() ([]stream.Record, error) {
	if s.stopped { // a deferred Stop after an explicit one
		return s.recs, s.stopErr
	}
	s.stopped = true
	l := s.lab
	l.mu.Lock()
	l.streams = slices.DeleteFunc(l.streams, func(x *Stream) bool { return x == s })
	l.mu.Unlock()
	s.send.stop()
	n, quiet := -1, time.Now()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		recs, _ := s.Records()
		if len(recs) != n {
			n, quiet = len(recs), time.Now()
		} else if time.Since(quiet) >= 500*time.Millisecond {
			break
		}
	}
	s.recv.stop()
	recs, err := s.Records()
	l.Logf("stream %s -> %s port %d: %s %s", s.Spec.From, s.Spec.To, s.Spec.Port, bytes.TrimSpace([]byte(s.send.out.String())), bytes.TrimSpace([]byte(s.recv.out.String())))
	if l.Dir != "" {
		dst := filepath.Join(l.Dir, s.Spec.From, fmt.Sprintf("stream-%d.rec", s.Spec.Port))
		if err := copyFile(s.Path, dst); err != nil {
			l.Logf("keeping stream records: %v", err)
		}
	}
	os.Remove(s.Path)
	s.stopErr = err
	return recs, err
}

func (s *Stream) kill() {
	s.send.kill()
	s.recv.kill()
	os.Remove(s.Path)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
