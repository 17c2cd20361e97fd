package daemon

import (
	"net/http"
	"net/http/pprof"
)

// pprofHandler serves Go's profiles under /debug/pprof/ (index, cmdline,
// profile, symbol, trace, and every named profile: heap, goroutine,
// allocs, block, mutex, threadcreate). The daemon mounts it only with
// --pprof, behind the admin token: profiles expose memory contents and
// the command line, and a CPU profile or trace costs CPU while it runs.
// It is a mux of its own; nothing goes on http.DefaultServeMux, which the
// controller never serves.
func pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
