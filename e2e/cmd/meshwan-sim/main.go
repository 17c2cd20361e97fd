// Command meshwan-sim runs the fleet-scale benchmark (`make bench-scale`):
// for each fleet size N it starts bin/meshwan-controller as a separate
// process on a fresh data directory, simulates N edges against it (package
// e2e/sim) and prints one markdown table per scenario; then the full-mesh
// allocation scenario on another fresh controller. It exits non-zero when
// an edge refused a desired state or a scenario could not complete; goals
// missed are printed, not failures.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshwan/meshwan/e2e/sim"
)

func main() {
	cfg := sim.ScaleConfig{Command: "meshwan-sim " + strings.Join(os.Args[1:], " ")}
	var edges, out, logLevel string
	flag.StringVar(&cfg.ControllerBin, "controller-bin", "bin/meshwan-controller", "controller binary, run as a child process")
	flag.StringVar(&edges, "edges", "1000,5000", "comma-separated fleet sizes (2 hubs + N-2 spokes each)")
	flag.StringVar(&cfg.WorkDir, "work-dir", "bin/bench-scale", "controller data and edge identities (emptied per run)")
	flag.DurationVar(&cfg.Steady, "steady", 60*time.Second, "steady-reporting window; admin reads run in its second half")
	flag.DurationVar(&cfg.Timeout, "timeout", 15*time.Minute, "cap on one fleet size's run")
	flag.IntVar(&cfg.Workers, "workers", 16, "concurrent enrollments during onboarding")
	flag.IntVar(&cfg.MeshSites, "mesh-sites", 100, "sites of the full-mesh allocation scenario (0 skips it)")
	flag.StringVar(&out, "out", "", "also append the tables to this file")
	flag.StringVar(&logLevel, "log-level", "info", "progress log level on stderr")
	flag.Func("controller-arg", "extra controller flag (repeatable), e.g. --controller-arg=--pprof", func(s string) error {
		cfg.ControllerArgs = append(cfg.ControllerArgs, s)
		return nil
	})
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		fail(2, "--log-level: %v", err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	for _, s := range strings.Split(edges, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < sim.Hubs+1 {
			fail(2, "--edges: %q is not a fleet size above %d", s, sim.Hubs)
		}
		cfg.Edges = append(cfg.Edges, n)
	}
	var w io.Writer = os.Stdout
	if out != "" {
		f, err := os.OpenFile(out, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			fail(2, "--out: %v", err)
		}
		defer f.Close()
		w = io.MultiWriter(os.Stdout, f)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := sim.RunScale(ctx, cfg, w); err != nil {
		fail(1, "%v", err)
	}
}

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "meshwan-sim: "+format+"\n", args...)
	os.Exit(code)
}
