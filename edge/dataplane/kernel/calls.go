package kernel

import (
	"slices"
	"strings"
	"sync"
)

// CallLog records the calls made on the fakes, in order, one line each
// ("RouteReplace 10.2.0.0/16 via 10.255.0.6 proto 240 metric 0 table
// 254"). A FakeNetlink and a FakeNFT may share one (set one's Log to the
// other's before use) so that a test sees the order of writes across both
// shims. Safe for concurrent use.
type CallLog struct {
	mu    sync.Mutex
	calls []call
}

type call struct {
	line string
	read bool // a dump or get: changes nothing
}

func (l *CallLog) add(line string, read bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, call{line: line, read: read})
}

// Calls returns every call so far.
func (l *CallLog) Calls() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, len(l.calls))
	for i, c := range l.calls {
		out[i] = c.line
	}
	return out
}

// Writes returns the calls that change state (not the dumps and gets).
// For nftables, queued batch operations count as writes when queued and
// "Flush" marks the commit.
func (l *CallLog) Writes() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, c := range l.calls {
		if !c.read {
			out = append(out, c.line)
		}
	}
	return out
}

// TakeWrites returns Writes and clears the log.
func (l *CallLog) TakeWrites() []string {
	w := l.Writes()
	l.Reset()
	return w
}

// Reset clears the log.
func (l *CallLog) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = nil
}

// failures holds the injected failures of one fake: a call named call
// whose rendered arguments contain match fails with err ("" matches
// every call of that name). once failures are removed when they fire.
type failures struct {
	mu   sync.Mutex
	list []failure
}

type failure struct {
	call, match string
	err         error
	once        bool
}

func (f *failures) set(callName, match string, err error, once bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.list = slices.DeleteFunc(f.list, func(x failure) bool { return x.call == callName && x.match == match })
	if err != nil {
		f.list = append(f.list, failure{call: callName, match: match, err: err, once: once})
	}
}

// check returns the injected error for a call with the given name and
// rendered arguments, if any.
func (f *failures) check(callName, args string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, x := range f.list {
		if x.call == callName && strings.Contains(args, x.match) {
			if x.once {
				f.list = slices.Delete(f.list, i, i+1)
			}
			return x.err
		}
	}
	return nil
}
