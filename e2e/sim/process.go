package sim

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Controller is the controller the scenarios drive: a separate process in
// the benchmark (Process), an in-process daemon in the tests.
type Controller interface {
	// Addr is the gRPC host:port edges and the admin client dial.
	Addr() string
	AdminToken() string
	CAPEM() []byte
	// Restart stops the controller and starts it again on the same data
	// directory and address; it returns when the new one serves, with the
	// moment the old one had stopped (after which nothing it sent can
	// arrive).
	Restart(ctx context.Context) (stopped time.Time, err error)
}

// ProcessConfig is how a controller process is started.
type ProcessConfig struct {
	Bin     string // bin/meshwan-controller
	DataDir string
	// GRPCListen and HTTPListen are fixed host:ports (see FreeAddr) so
	// that a restarted controller answers where the edges reconnect.
	GRPCListen, HTTPListen string
	TunnelPool             string
	// Log receives the controller's stderr.
	Log io.Writer
	// Args are extra controller flags.
	Args []string
}

// Process is a controller running as a child process, so that its CPU and
// memory are measured apart from the simulator's.
type Process struct {
	cfg    ProcessConfig
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
	lines  chan struct{} // closed when the stderr reader ends
	token  string
	caPEM  []byte
}

// StartProcess starts the controller and returns once it serves.
func StartProcess(ctx context.Context, cfg ProcessConfig) (*Process, error) {
	p := &Process{cfg: cfg}
	if err := p.start(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Process) start(ctx context.Context) error {
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	args := append([]string{"--data-dir", p.cfg.DataDir, "--grpc-listen", p.cfg.GRPCListen,
		"--http-listen", p.cfg.HTTPListen, "--tunnel-pool", p.cfg.TunnelPool}, p.cfg.Args...)
	cmd := exec.Command(p.cfg.Bin, args...)
	cmd.Stderr = pw
	cmd.Stdout = pw
	// A simulator killed mid-run must not leave a controller behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return fmt.Errorf("start %s: %w", p.cfg.Bin, err)
	}
	pw.Close() // the child holds its copy; EOF comes when it exits
	serving := make(chan struct{})
	p.cmd, p.exited, p.lines = cmd, make(chan struct{}), make(chan struct{})
	go func() { // owned by p: ends at EOF, after the child exits; Stop waits for it
		defer close(p.lines)
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		announced := false
		for sc.Scan() {
			line := sc.Text()
			if p.cfg.Log != nil {
				fmt.Fprintln(p.cfg.Log, line)
			}
			// The daemon logs this once its listeners serve.
			if !announced && strings.Contains(line, `msg="controller serving"`) {
				announced = true
				close(serving)
			}
		}
		io.Copy(io.Discard, pr)
	}()
	go func() { // owned by p: ends when the child does
		cmd.Wait()
		close(p.exited)
	}()
	select {
	case <-serving:
	case <-p.exited:
		<-p.lines
		return fmt.Errorf("controller exited before serving: %v (see its log)", cmd.ProcessState)
	case <-ctx.Done():
		p.kill()
		return fmt.Errorf("controller not serving: %w", ctx.Err())
	}
	tok, err := os.ReadFile(filepath.Join(p.cfg.DataDir, "admin.token"))
	if err != nil {
		return err
	}
	p.token = strings.TrimSpace(string(tok))
	if p.caPEM, err = os.ReadFile(filepath.Join(p.cfg.DataDir, "ca.crt")); err != nil {
		return err
	}
	return nil
}

func (p *Process) Addr() string       { return p.cfg.GRPCListen }
func (p *Process) AdminToken() string { return p.token }
func (p *Process) CAPEM() []byte      { return p.caPEM }
func (p *Process) DataDir() string    { return p.cfg.DataDir }
func (p *Process) PID() int           { return p.cmd.Process.Pid }

// Stop sends SIGTERM and waits for the exit; after 30 s (or when ctx ends)
// it kills.
func (p *Process) Stop(ctx context.Context) error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-p.exited:
	case <-ctx.Done():
		p.kill()
	case <-time.After(30 * time.Second):
		p.kill()
	}
	<-p.lines
	if st := p.cmd.ProcessState; st != nil && !st.Success() {
		return fmt.Errorf("controller stopped with %v", st)
	}
	return nil
}

func (p *Process) kill() {
	p.cmd.Process.Kill()
	<-p.exited
	<-p.lines
}

// Restart is Stop then start on the same data directory and addresses.
func (p *Process) Restart(ctx context.Context) (time.Time, error) {
	if err := p.Stop(ctx); err != nil {
		return time.Time{}, err
	}
	stopped := time.Now()
	return stopped, p.start(ctx)
}

// Usage is a process's resource use from /proc.
type Usage struct {
	CPU      time.Duration // user + system since start
	RSS, HWM int64         // resident set now and its peak, bytes
}

// clockTick is USER_HZ, 100 on every Linux architecture Go runs on
// (sysconf(_SC_CLK_TCK) without cgo).
const clockTick = 10 * time.Millisecond

// ReadUsage reads /proc/PID/stat and /proc/PID/status (pid 0: this
// process).
func ReadUsage(pid int) (Usage, error) {
	dir := "/proc/self"
	if pid != 0 {
		dir = "/proc/" + strconv.Itoa(pid)
	}
	var u Usage
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return u, err
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15.
	i := strings.LastIndexByte(string(stat), ')')
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return u, fmt.Errorf("%s/stat: %d fields", dir, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	stt, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return u, fmt.Errorf("%s/stat: %w", dir, err)
	}
	u.CPU = time.Duration(ut+stt) * clockTick
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return u, err
	}
	for line := range strings.Lines(string(status)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return u, fmt.Errorf("%s/status %s: %w", dir, k, err)
		}
		if k == "VmRSS" {
			u.RSS = kb << 10
		} else {
			u.HWM = kb << 10
		}
	}
	return u, nil
}

// Usage reads the controller process's resource use.
func (p *Process) Usage() (Usage, error) { return ReadUsage(p.PID()) }

// FreeAddr returns a loopback host:port that was free a moment ago, for a
// listener that must keep its address across restarts.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
