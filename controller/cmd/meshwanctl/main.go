// Command meshwanctl is the meshwan operator's command line: sites,
// tunnels, topology, enrollment tokens, fleet status, and networks as code
// (plan, apply, wait). The commands live in controller/ctl; this only
// wires them to the process.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/meshwan/meshwan/controller/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	app := &ctl.App{Out: os.Stdout, Err: os.Stderr, Getenv: os.Getenv, Terminal: isTerminal(os.Stdout)}
	err := app.Command().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

// isTerminal reports whether f is a character device (a terminal, not a
// pipe or file): progress is then drawn in place.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
