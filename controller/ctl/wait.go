package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Lag is a site that has not converged, and why.
type Lag struct {
	Site   string
	Reason string
}

// convergence says which of the named sites have converged. A site has
// converged when its edge is up (holds a Sync stream) and reports every
// tunnel the controller has for it in state up: the edge has received the
// tunnels of the applied network and brought them up. Tunnels an edge
// still reports but the controller no longer has do not count. (A change
// that adds no tunnel, such as an MTU change, shows as converged at once:
// the tunnel states do not say which version runs.)
func convergence(names []string, sites []*pb.Site, tunnels []*pb.Tunnel) (done int, lag []Lag) {
	bySite := map[string]*pb.Site{}
	for _, s := range sites {
		bySite[s.GetName()] = s
	}
	want := map[string][]string{}
	for _, t := range tunnels {
		want[t.GetA().GetSite()] = append(want[t.GetA().GetSite()], t.GetId())
		want[t.GetB().GetSite()] = append(want[t.GetB().GetSite()], t.GetId())
	}
	for _, name := range names {
		s, ok := bySite[name]
		if !ok {
			lag = append(lag, Lag{name, "not found on the controller"})
			continue
		}
		if s.GetUnmanaged() {
			// Nothing runs there to converge: its tunnels are waited for
			// at their managed ends.
			done++
			continue
		}
		st := s.GetStatus()
		switch st.GetState() {
		case pb.EdgeState_EDGE_STATE_UP:
		case pb.EdgeState_EDGE_STATE_DOWN:
			since := ""
			if st.GetLastSeen() != nil {
				since = " since " + st.GetLastSeen().AsTime().UTC().Format(time.RFC3339)
			}
			lag = append(lag, Lag{name, "edge down" + since})
			continue
		default:
			lag = append(lag, Lag{name, fmt.Sprintf("edge never seen (enroll it: meshwanctl tokens create --site %s)", name)})
			continue
		}
		reported := map[string]*pb.TunnelStatus{}
		for _, t := range st.GetTunnels() {
			reported[t.GetTunnelId()] = t
		}
		var why []string
		ids := want[name]
		slices.Sort(ids)
		for _, id := range ids {
			t, ok := reported[id]
			switch {
			case !ok:
				why = append(why, "tunnel "+id+" not reported yet")
			case t.GetState() != pb.TunnelState_TUNNEL_STATE_UP:
				r := "tunnel " + id + " " + orDash(tunnelStates[t.GetState()])
				if t.GetDetail() != "" {
					r += ": " + t.GetDetail()
				}
				why = append(why, r)
			}
		}
		if len(why) > 0 {
			if len(why) > 3 {
				why = append(why[:3], fmt.Sprintf("and %d more", len(why)-3))
			}
			lag = append(lag, Lag{name, strings.Join(why, "; ")})
			continue
		}
		done++
	}
	return done, lag
}

// ErrNotConverged is returned when --wait times out.
var ErrNotConverged = errors.New("the network did not converge")

// waitConverged polls the controller until every named site has
// converged or timeout passes, showing progress on w: a bar rewritten in
// place on a terminal, otherwise a line whenever the count changes.
func waitConverged(ctx context.Context, c pb.AdminServiceClient, w io.Writer, tty bool, names []string, timeout, every time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(every)
	defer tick.Stop()
	last := -1
	var lag []Lag
	for {
		sites, err := c.ListSites(ctx, &pb.ListSitesRequest{})
		var tuns *pb.ListTunnelsResponse
		if err == nil {
			tuns, err = c.ListTunnels(ctx, &pb.ListTunnelsRequest{})
		}
		if err != nil && ctx.Err() == nil && status.Code(err) != codes.DeadlineExceeded {
			return err
		}
		if err != nil {
			// The server may see the call's deadline pass a moment before
			// this process does: that is the timeout too.
			<-ctx.Done()
		}
		if err == nil {
			var done int
			done, lag = convergence(names, sites.GetSites(), tuns.GetTunnels())
			if tty {
				fmt.Fprintf(w, "\r%s %d/%d edges converged", bar(done, len(names), 30), done, len(names))
			} else if done != last {
				fmt.Fprintf(w, "%d/%d edges converged\n", done, len(names))
			}
			last = done
			if done == len(names) {
				if tty {
					fmt.Fprintln(w)
				}
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if tty {
				fmt.Fprintln(w)
			}
			if ctx.Err() != context.DeadlineExceeded {
				return ctx.Err()
			}
			var b strings.Builder
			for _, l := range lag {
				fmt.Fprintf(&b, "\n  %s: %s", l.Site, l.Reason)
			}
			return fmt.Errorf("%w after %v: %d/%d edges converged; lagging:%s", ErrNotConverged, timeout, max(last, 0), len(names), b.String())
		case <-tick.C:
		}
	}
}

func bar(done, total, width int) string {
	n := width
	if total > 0 {
		n = done * width / total
	}
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}
