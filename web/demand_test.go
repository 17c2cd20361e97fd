package web

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingSource is a fakeSource that counts its State builds and its
// Changes subscriptions, and says when one stops; as a Sampler it serves
// fixed samples and says when it was asked.
type countingSource struct {
	*fakeSource
	builds   atomic.Int64
	follows  atomic.Int64
	stopped  chan struct{} // receives when a Changes subscription stops
	sampled  chan struct{} // receives after each Sample
	poke     chan struct{} // SampleChanges
	mu       sync.Mutex
	sites    []Site
	reported []Tunnel
}

func newCountingSource(st State) *countingSource {
	return &countingSource{fakeSource: newFakeSource(st), stopped: make(chan struct{}, 8),
		sampled: make(chan struct{}, 8), poke: make(chan struct{}, 1)}
}

func (c *countingSource) State(ctx context.Context) (State, error) {
	c.builds.Add(1)
	return c.fakeSource.State(ctx)
}

func (c *countingSource) Changes() (<-chan struct{}, func()) {
	c.follows.Add(1)
	ch, stop := c.fakeSource.Changes()
	return ch, func() { stop(); c.stopped <- struct{}{} }
}

func (c *countingSource) Sample(context.Context) ([]Site, []Tunnel, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer func() { c.sampled <- struct{}{} }()
	return c.sites, append([]Tunnel(nil), c.reported...), nil
}

func (c *countingSource) SampleChanges() (<-chan struct{}, func()) { return c.poke, func() {} }

// notify pokes the Source's change channel n times, as a busy network does.
func (c *countingSource) notify(n int) {
	for range n {
		select {
		case c.changes <- struct{}{}:
		default:
		}
	}
}

func openStream(t *testing.T, s *Server, url string) (*bufio.Reader, func()) {
	t.Helper()
	value, _ := s.auth.newSession(testIdentity)
	req, _ := http.NewRequest("GET", url+"/api/stream", nil)
	req.AddCookie(&http.Cookie{Name: cookieName, Value: value})
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("stream: %v %v", resp, err)
	}
	return bufio.NewReader(resp.Body), func() { resp.Body.Close() }
}

// TestNoBuildsWithoutReaders: with no stream open, changes build nothing
// (Changes is not even followed); a request builds once; an open stream
// follows changes live; once it closes, changes build nothing again.
func TestNoBuildsWithoutReaders(t *testing.T) {
	src := newCountingSource(twoSites(TunnelUp))
	s, ts := serve(t, src, true)

	src.notify(100)
	if b, f := src.builds.Load(), src.follows.Load(); b != 0 || f != 0 {
		t.Fatalf("no reader, 100 changes: %d builds, Changes followed %d times; want 0 and 0", b, f)
	}
	if resp, body := do(t, http.DefaultClient, "GET", ts.URL+"/api/state", "", nil); resp.StatusCode != 200 || len(body) == 0 {
		t.Fatalf("GET /api/state: %d", resp.StatusCode)
	}
	if b := src.builds.Load(); b != 1 {
		t.Fatalf("a request made %d builds, want 1", b)
	}

	r, closeStream := openStream(t, s, ts.URL)
	if st := readEvent(t, r); st.Tunnels[0].State != TunnelUp {
		t.Fatalf("first event: %+v", st.Tunnels[0])
	}
	src.set(twoSites(TunnelDown))
	if st := readEvent(t, r); st.Tunnels[0].State != TunnelDown {
		t.Fatalf("live update: %+v", st.Tunnels[0])
	}
	closeStream()
	select {
	case <-src.stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Changes still followed after the last stream closed")
	}
	before := src.builds.Load()
	src.notify(100)
	src.set(twoSites(TunnelUp))
	if b := src.builds.Load(); b != before {
		t.Errorf("after the stream closed, changes made %d builds, want 0", b-before)
	}
	// A request sees the latest state all the same.
	_, body := do(t, http.DefaultClient, "GET", ts.URL+"/api/state", "", nil)
	if want := `"tunnels_up":1`; !strings.Contains(body, want) {
		t.Errorf("state after the stream closed lacks %s: %s", want, body)
	}
}

// TestSamplesWithoutReaders: with no stream open, a Sampler's state change
// feeds the tunnel's history and events without building the State.
func TestSamplesWithoutReaders(t *testing.T) {
	src := newCountingSource(twoSites(TunnelUp))
	s, ts := serve(t, src, true)
	// One request: the tunnels' ends come from a State.
	do(t, http.DefaultClient, "GET", ts.URL+"/api/state", "", nil)
	builds := src.builds.Load()

	const id = "a.inet~b.inet"
	rtt := 31.0
	src.mu.Lock()
	src.sites = []Site{{Name: "a", State: SiteUp}, {Name: "b", State: SiteDown}}
	src.reported = []Tunnel{{ID: id, Reports: []EndReport{{Site: "a", State: TunnelDown, Detail: "no IKE"}}, RTTMillis: &rtt}}
	src.mu.Unlock()
	src.poke <- struct{}{}
	<-src.sampled

	s.buildMu.Lock() // the sample is recorded under it
	samples, ok := s.hist.get(time.Now(), id)
	events := append([]Event(nil), s.track.events...)
	s.buildMu.Unlock()
	if !ok || len(samples) != 2 || samples[1].State != TunnelDown || samples[1].RTTMillis == nil || *samples[1].RTTMillis != 31 {
		t.Fatalf("history after a sampled state change: %+v", samples)
	}
	if want := "tunnel " + id + " down: no IKE; edge of b is not connected"; len(events) != 1 || events[0].What != want {
		t.Errorf("events %+v", events)
	}
	if b := src.builds.Load(); b != builds {
		t.Errorf("sampling made %d State builds, want 0", b-builds)
	}
}
