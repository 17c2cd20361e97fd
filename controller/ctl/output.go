package ctl

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	pb "github.com/meshwan/meshwan/proto/meshwan/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"
)

// Output formats of -o.
const (
	formatTable = "table"
	formatJSON  = "json"
	formatYAML  = "yaml"
)

func checkFormat(f string) error {
	switch f {
	case formatTable, formatJSON, formatYAML:
		return nil
	}
	return fmt.Errorf("-o %q: want table, json or yaml", f)
}

// emit writes v (a proto message or a plain value) as JSON or YAML with
// the API's field names, or calls table for the table form.
func emit(w io.Writer, format string, v any, table func(io.Writer)) error {
	if format == formatTable {
		table(w)
		return nil
	}
	var raw []byte
	var err error
	if m, ok := v.(proto.Message); ok {
		raw, err = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true, Multiline: true, Indent: "  "}.Marshal(m)
	} else {
		raw, err = json.MarshalIndent(v, "", "  ")
	}
	if err != nil {
		return err
	}
	if format == formatJSON {
		_, err = fmt.Fprintf(w, "%s\n", raw)
		return err
	}
	// JSON is YAML: parse it into a node tree (keeping the key order) and
	// print it in block style.
	var n yaml.Node
	if err := yaml.Unmarshal(raw, &n); err != nil {
		return err
	}
	block(&n)
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return err
	}
	return enc.Close()
}

func block(n *yaml.Node) {
	n.Style &^= yaml.FlowStyle
	if n.Kind == yaml.ScalarNode && n.Style&yaml.DoubleQuotedStyle != 0 {
		n.Style = 0 // the encoder quotes what needs it
	}
	for _, c := range n.Content {
		block(c)
	}
}

func table(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

var roles = map[pb.SiteRole]string{pb.SiteRole_SITE_ROLE_HUB: "hub", pb.SiteRole_SITE_ROLE_SPOKE: "spoke", pb.SiteRole_SITE_ROLE_UNSPECIFIED: "spoke"}

var edgeStates = map[pb.EdgeState]string{pb.EdgeState_EDGE_STATE_UP: "up", pb.EdgeState_EDGE_STATE_DOWN: "down", pb.EdgeState_EDGE_STATE_NEVER_SEEN: "never-seen"}

var tunnelStates = map[pb.TunnelState]string{pb.TunnelState_TUNNEL_STATE_UP: "up", pb.TunnelState_TUNNEL_STATE_DEGRADED: "degraded", pb.TunnelState_TUNNEL_STATE_DOWN: "down"}

func sitesTable(w io.Writer, sites []*pb.Site) {
	var rows [][]string
	for _, s := range sites {
		var trs []string
		for _, t := range s.GetTransports() {
			trs = append(trs, t.GetName()+"="+t.GetAddress())
		}
		up := 0
		for _, t := range s.GetStatus().GetTunnels() {
			if t.GetState() == pb.TunnelState_TUNNEL_STATE_UP {
				up++
			}
		}
		tunnels := "-"
		if n := len(s.GetStatus().GetTunnels()); n > 0 {
			tunnels = fmt.Sprintf("%d/%d up", up, n)
		}
		edge := orDash(edgeStates[s.GetStatus().GetState()])
		if s.GetUnmanaged() {
			edge = "unmanaged" // no edge; its tunnels' states come from the managed ends
		}
		rows = append(rows, []string{s.GetName(), roles[s.GetRole()], strings.Join(trs, ","), strings.Join(s.GetLanPrefixes(), ","),
			fmt.Sprint(s.GetAsn()), edge, tunnels})
	}
	table(w, []string{"NAME", "ROLE", "TRANSPORTS", "LAN PREFIXES", "ASN", "EDGE", "TUNNELS"}, rows)
}

func tunnelsTable(w io.Writer, ts []*pb.Tunnel) {
	var rows [][]string
	for _, t := range ts {
		a, b := t.GetA(), t.GetB()
		rows = append(rows, []string{t.GetId(), t.GetPrefix(),
			fmt.Sprintf("%s %s", a.GetInnerAddress(), a.GetUnderlayAddress()),
			fmt.Sprintf("%s %s", b.GetInnerAddress(), b.GetUnderlayAddress())})
	}
	table(w, []string{"ID", "/30", "A (INNER UNDERLAY)", "B (INNER UNDERLAY)"}, rows)
}

var modes = map[pb.TopologyMode]string{pb.TopologyMode_TOPOLOGY_MODE_FULL_MESH: "full-mesh", pb.TopologyMode_TOPOLOGY_MODE_HUB_AND_SPOKE: "hub-and-spoke", pb.TopologyMode_TOPOLOGY_MODE_UNSPECIFIED: "none"}

func topologyTable(w io.Writer, t *pb.Topology) {
	match := "same-name"
	if t.GetTransportMatch() == pb.TransportMatch_TRANSPORT_MATCH_ALL_PAIRS {
		match = "all-pairs"
	}
	routing := "static"
	if t.GetRouting() == pb.RoutingMode_ROUTING_MODE_BGP {
		routing = "bgp"
	}
	ip, pp := t.GetIpsec(), t.GetPathPolicy()
	var classes []string
	for _, c := range pp.GetTrafficClasses() {
		classes = append(classes, c.GetName()+"->"+c.GetSlaClass())
	}
	var slas []string
	for _, c := range pp.GetSlaClasses() {
		slas = append(slas, c.GetName())
	}
	var unjoined []string
	for _, p := range t.GetUnjoined() {
		unjoined = append(unjoined, p.GetA()+"~"+p.GetB())
	}
	probing := fmt.Sprintf("every %d ms, down after %d, up after %d, hold-down %d ms", pp.GetProbeIntervalMs(), pp.GetDownAfter(), pp.GetUpAfter(), pp.GetHoldDownMs())
	if pp.GetDisabled() {
		probing = "disabled"
	}
	rows := [][]string{
		{"mode", modes[t.GetMode()]},
		{"transport_match", match},
		{"mtu", fmt.Sprint(t.GetMtu())},
		{"routing", routing},
		{"ipsec", fmt.Sprintf("ike %s %ds, esp %s %ds, dpd %ds", ip.GetIkeProposal(), ip.GetIkeLifetimeSeconds(), ip.GetEspProposal(), ip.GetEspLifetimeSeconds(), ip.GetDpdSeconds())},
		{"probing", probing},
		{"sla_classes", orDash(strings.Join(slas, ", "))},
		{"traffic_classes", orDash(strings.Join(classes, ", "))},
		{"transit_prefixes", orDash(strings.Join(t.GetTransitPrefixes(), ", "))},
		{"unjoined", orDash(strings.Join(unjoined, ", "))},
	}
	table(w, []string{"FIELD", "VALUE"}, rows)
}

func tokenState(t *pb.EnrollmentToken, now time.Time) string {
	switch {
	case t.GetRevoked():
		return "revoked"
	case t.GetUsed():
		return "used"
	case t.GetExpiresAt() != nil && now.After(t.GetExpiresAt().AsTime()):
		return "expired"
	}
	return "valid"
}

func tokensTable(w io.Writer, ts []*pb.EnrollmentToken, now time.Time) {
	var rows [][]string
	for _, t := range ts {
		site := orDash(t.GetSite())
		if t.GetClaim() {
			site = "(claim)"
		}
		rows = append(rows, []string{t.GetId(), site, t.GetCreatedAt().AsTime().UTC().Format(time.RFC3339),
			t.GetExpiresAt().AsTime().UTC().Format(time.RFC3339), tokenState(t, now)})
	}
	table(w, []string{"ID", "SITE", "CREATED", "EXPIRES", "STATE"}, rows)
}

// planText renders a plan for people. source names the declaration (the
// file); applied says whether it was carried out or only planned.
func planText(w io.Writer, p *pb.ApplyNetworkResponse, source string, applied bool) {
	if !p.GetChanged() {
		fmt.Fprintf(w, "no changes: the network matches %s (%d tunnels kept)\n", source, p.GetTunnelsKept())
	} else {
		verb := "Plan for"
		if applied {
			verb = "Applied"
		}
		fmt.Fprintf(w, "%s %s:\n", verb, source)
		for _, s := range p.GetSitesCreated() {
			fmt.Fprintf(w, "  + site %s\n", s)
		}
		for _, u := range p.GetSitesUpdated() {
			fmt.Fprintf(w, "  ~ site %s (%s)\n", u.GetName(), strings.Join(u.GetFields(), ", "))
		}
		for _, s := range p.GetSitesDeleted() {
			fmt.Fprintf(w, "  - site %s\n", s)
		}
		if len(p.GetTopologyChanges()) > 0 {
			fmt.Fprintf(w, "  ~ topology (%s)\n", strings.Join(p.GetTopologyChanges(), ", "))
		}
		for _, t := range p.GetTunnelsAdded() {
			fmt.Fprintf(w, "  + tunnel %s\n", t)
		}
		for _, t := range p.GetTunnelsRemoved() {
			fmt.Fprintf(w, "  - tunnel %s (its /30 is released)\n", t)
		}
		if p.GetTunnelsKept() > 0 {
			fmt.Fprintf(w, "  = %d tunnels kept with their /30s and PSKs\n", p.GetTunnelsKept())
		}
		fmt.Fprintf(w, "%d sites to create, %d to change, %d to delete; %d tunnels to add, %d to remove, %d kept.\n",
			len(p.GetSitesCreated()), len(p.GetSitesUpdated()), len(p.GetSitesDeleted()), len(p.GetTunnelsAdded()), len(p.GetTunnelsRemoved()), p.GetTunnelsKept())
	}
	if n := p.GetSitesNotInRequest(); len(n) > 0 {
		fmt.Fprintf(w, "Not in %s and kept (apply --prune deletes them): %s\n", source, strings.Join(n, ", "))
	}
}

// Fleet is the status summary.
type Fleet struct {
	Sites struct {
		Total     int `json:"total"`
		Up        int `json:"up"`
		Down      int `json:"down"`
		NeverSeen int `json:"never_seen"`
		Unmanaged int `json:"unmanaged,omitempty"`
	} `json:"sites"`
	Tunnels struct {
		Total      int `json:"total"`
		Up         int `json:"up"`
		Degraded   int `json:"degraded"`
		Down       int `json:"down"`
		Unreported int `json:"unreported"`
	} `json:"tunnels"`
	WorstPaths []Path `json:"worst_paths"`
}

// Path is one tunnel as one of its ends measures it.
type Path struct {
	Tunnel  string  `json:"tunnel_id"`
	Site    string  `json:"site"`
	LossPct float64 `json:"loss_pct"`
	RTTMs   float64 `json:"rtt_ms"`
	State   string  `json:"state"`
}

// worstPaths is how many paths status lists.
const worstPaths = 5

// summarize builds the fleet summary. A tunnel's state is the worse of
// what its two ends report (unreported when neither does); the worst
// paths are the probed ones, by loss and then RTT.
func summarize(sites []*pb.Site, tunnels []*pb.Tunnel) Fleet {
	var f Fleet
	rank := map[pb.TunnelState]int{pb.TunnelState_TUNNEL_STATE_UP: 1, pb.TunnelState_TUNNEL_STATE_DEGRADED: 2, pb.TunnelState_TUNNEL_STATE_DOWN: 3}
	worst := map[string]pb.TunnelState{}
	for _, s := range sites {
		f.Sites.Total++
		if s.GetUnmanaged() {
			// No edge; its tunnels are the managed ends' reports,
			// counted with those sites.
			f.Sites.Unmanaged++
			continue
		}
		switch s.GetStatus().GetState() {
		case pb.EdgeState_EDGE_STATE_UP:
			f.Sites.Up++
		case pb.EdgeState_EDGE_STATE_DOWN:
			f.Sites.Down++
		default:
			f.Sites.NeverSeen++
		}
		for _, t := range s.GetStatus().GetTunnels() {
			if rank[t.GetState()] > rank[worst[t.GetTunnelId()]] {
				worst[t.GetTunnelId()] = t.GetState()
			}
			if t.GetProbed() {
				f.WorstPaths = append(f.WorstPaths, Path{Tunnel: t.GetTunnelId(), Site: s.GetName(), LossPct: t.GetLossPct(), RTTMs: t.GetRttMs(), State: tunnelStates[t.GetState()]})
			}
		}
	}
	for _, t := range tunnels {
		f.Tunnels.Total++
		switch worst[t.GetId()] {
		case pb.TunnelState_TUNNEL_STATE_UP:
			f.Tunnels.Up++
		case pb.TunnelState_TUNNEL_STATE_DEGRADED:
			f.Tunnels.Degraded++
		case pb.TunnelState_TUNNEL_STATE_DOWN:
			f.Tunnels.Down++
		default:
			f.Tunnels.Unreported++
		}
	}
	slices.SortStableFunc(f.WorstPaths, func(a, b Path) int {
		if a.LossPct != b.LossPct {
			return cmpDesc(a.LossPct, b.LossPct)
		}
		if a.RTTMs != b.RTTMs {
			return cmpDesc(a.RTTMs, b.RTTMs)
		}
		return strings.Compare(a.Tunnel+a.Site, b.Tunnel+b.Site)
	})
	f.WorstPaths = f.WorstPaths[:min(len(f.WorstPaths), worstPaths)]
	if f.WorstPaths == nil {
		f.WorstPaths = []Path{}
	}
	return f
}

func cmpDesc(a, b float64) int {
	if a > b {
		return -1
	}
	return 1
}

func fleetText(w io.Writer, f Fleet) {
	unmanaged := ""
	if f.Sites.Unmanaged > 0 {
		unmanaged = fmt.Sprintf(", %d unmanaged", f.Sites.Unmanaged)
	}
	fmt.Fprintf(w, "Sites:   %d (%d up, %d down, %d never seen%s)\n", f.Sites.Total, f.Sites.Up, f.Sites.Down, f.Sites.NeverSeen, unmanaged)
	fmt.Fprintf(w, "Tunnels: %d (%d up, %d degraded, %d down, %d not reported)\n", f.Tunnels.Total, f.Tunnels.Up, f.Tunnels.Degraded, f.Tunnels.Down, f.Tunnels.Unreported)
	if len(f.WorstPaths) == 0 {
		fmt.Fprintln(w, "Worst paths: none probed")
		return
	}
	fmt.Fprintln(w, "Worst paths:")
	var rows [][]string
	for _, p := range f.WorstPaths {
		rows = append(rows, []string{p.Tunnel, p.Site, fmt.Sprintf("%.1f", p.LossPct), fmt.Sprintf("%.1f", p.RTTMs), p.State})
	}
	table(w, []string{"TUNNEL", "MEASURED AT", "LOSS %", "RTT MS", "STATE"}, rows)
}

// claimTokenText prints a claim token as the edge image's config file.
func claimTokenText(w io.Writer, t *pb.EnrollmentToken) {
	fmt.Fprintf(w, "claim token %s, expires %s (revoke: meshwanctl tokens revoke %s)\n", t.GetId(), t.GetExpiresAt().AsTime().UTC().Format(time.RFC3339), t.GetId())
	fmt.Fprintf(w, "bake into the image as /etc/meshwan/edge.yaml:\n  controller: CONTROLLER:7400\n  claim-token: %s\n  ca-hash: %s\n", t.GetSecret(), t.GetCaSha256())
	fmt.Fprintf(w, "then approve each box: meshwanctl devices list; meshwanctl devices approve DEVICE-ID --site SITE\n")
}
