package browsertest

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"github.com/meshwan/meshwan/web"
)

// These tests need no browser: the dashboard's HTTP side against a real
// controller.

func request(t *testing.T, c *http.Client, method, url, body string, header map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func loggedInClient(t *testing.T, c *controller) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar}
	if code, body := request(t, client, "POST", c.base+"/api/login", `{"token":"`+c.d.AdminToken+`"}`, map[string]string{web.CSRFHeader: "1"}); code != 200 {
		t.Fatalf("login: %d %s", code, body)
	}
	return client
}

// TestRESTAcceptsDashboardSession: /v1 takes the session cookie in place of
// the bearer token, and state-changing calls so authenticated need the
// CSRF header.
func TestRESTAcceptsDashboardSession(t *testing.T) {
	c := startController(t)
	c.seed(t, pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH, testNetwork[:2]...)
	browser := loggedInClient(t, c)
	anon := &http.Client{}
	body := `{"site":"hub1","ttl_seconds":600}`
	csrf := map[string]string{web.CSRFHeader: "1"}
	cases := []struct {
		name   string
		client *http.Client
		method string
		path   string
		header map[string]string
		want   int
	}{
		{"GET with the cookie", browser, "GET", "/v1/sites", nil, 200},
		{"POST with the cookie and the CSRF header", browser, "POST", "/v1/enrollment-tokens", csrf, 200},
		{"POST with the cookie, no CSRF header", browser, "POST", "/v1/enrollment-tokens", nil, 401},
		{"POST with the CSRF header, no cookie", anon, "POST", "/v1/enrollment-tokens", csrf, 401},
		{"cookie with a wrong bearer token", browser, "GET", "/v1/sites", map[string]string{"Authorization": "Bearer nope"}, 401},
		{"bearer token as before", anon, "POST", "/v1/enrollment-tokens", map[string]string{"Authorization": "Bearer " + c.d.AdminToken}, 200},
		{"dashboard state with the cookie", browser, "GET", "/api/state", nil, 200},
		{"dashboard state without", anon, "GET", "/api/state", nil, 401},
		{"event stream without", anon, "GET", "/api/stream", nil, 401},
	}
	for _, tc := range cases {
		code, resp := request(t, tc.client, tc.method, c.base+tc.path, body, tc.header)
		if code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, resp, tc.want)
		}
	}
}

// TestStreamShowsTunnelDown: an edge's report reaches the event stream
// within 2 s (what the browser test sees, without the browser).
func TestStreamShowsTunnelDown(t *testing.T) {
	c := startController(t)
	c.seed(t, pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE, testNetwork[:3]...)
	tunnels := c.tunnels(t)
	hub1 := c.connectEdge(t, "hub1")
	reportAll(t, hub1, tunnels, reportUp, nil)
	id := tunnels[0].Id

	req, _ := http.NewRequest("GET", c.base+"/api/stream", nil)
	resp, err := loggedInClient(t, c).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer resp.Body.Close()
	done := make(chan struct{})
	defer close(done)
	states := make(chan web.State)
	wg.Go(func() { // ends when the test closes the body or stops reading
		defer close(states)
		r := bufio.NewReader(resp.Body)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if data, ok := strings.CutPrefix(strings.TrimSpace(line), "data: "); ok {
				var st web.State
				if json.Unmarshal([]byte(data), &st) != nil {
					continue
				}
				select {
				case states <- st:
				case <-done:
					return
				}
			}
		}
	})
	stateOf := func(st web.State) string {
		for _, tn := range st.Tunnels {
			if tn.ID == id {
				return tn.State
			}
		}
		return ""
	}
	waitState := func(want string, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case st, ok := <-states:
				if !ok {
					t.Fatal("stream ended")
				}
				if stateOf(st) == want {
					took := time.Since(start)
					if took > within {
						t.Errorf("tunnel %s %s after %v, want within %v", id, want, took, within)
					}
					return took
				}
			case <-timeout:
				t.Fatalf("tunnel %s never %s on the stream", id, want)
			}
		}
	}
	waitState(web.TunnelUp, 30*time.Second)
	reportAll(t, hub1, tunnels, reportUp, map[string]tunnelReport{id: reportDown})
	t.Logf("tunnel down on the stream after %v", waitState(web.TunnelDown, liveLatency))
}
