// Package intent owns the operator's declared network: sites with their WAN
// transports and LAN prefixes, and the topology spec with its path policy
// (probing, failover, SLA and traffic classes). It is pure: types,
// defaults and validation, no I/O. Every validation error wraps ErrInvalid
// (or ErrConflict for clashes between sites) and names the offending field,
// so the API can answer with a precise status.
package intent

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/meshwan/meshwan/edge/dataplane/validity"
)

// Sentinel errors; callers wrap them with %w and the API maps them to
// status codes in one table.
var (
	ErrInvalid      = errors.New("invalid argument")
	ErrExists       = errors.New("already exists") // a site of that name exists
	ErrConflict     = errors.New("conflict")       // overlapping prefix, shared address, taken ASN
	ErrPrecondition = errors.New("failed precondition")
	ErrNotFound     = errors.New("not found")
)

// Role of a site in a hub-and-spoke topology.
type Role string

const (
	RoleSpoke Role = "spoke"
	RoleHub   Role = "hub"
)

// Dynamic is the Transport address of an uplink whose public address is not
// known in advance.
const Dynamic = "dynamic"

// Transport is one WAN uplink. Addr is invalid (zero) when Dynamic.
type Transport struct {
	Name    string     `json:"name"`
	Addr    netip.Addr `json:"addr,omitzero"`
	Dynamic bool       `json:"dynamic,omitempty"`
}

// Site is one location with an edge.
type Site struct {
	Name        string         `json:"name"`
	Role        Role           `json:"role"`
	Transports  []Transport    `json:"transports"`
	LANPrefixes []netip.Prefix `json:"lan_prefixes"`
	ASN         uint32         `json:"asn"`
}

// Hub reports whether the site is a hub.
func (s Site) Hub() bool { return s.Role == RoleHub }

// Transport returns the named transport.
func (s Site) Transport(name string) (Transport, bool) {
	for _, t := range s.Transports {
		if t.Name == name {
			return t, true
		}
	}
	return Transport{}, false
}

// Mode is the topology shape.
type Mode string

const (
	ModeNone        Mode = ""
	ModeFullMesh    Mode = "full-mesh"
	ModeHubAndSpoke Mode = "hub-and-spoke"
)

// Match decides which transports of two connected sites get a tunnel.
type Match string

const (
	MatchSameName Match = "same-name"
	MatchAllPairs Match = "all-pairs"
)

// Routing is how sites learn each other's LAN prefixes.
type Routing string

const (
	RoutingStatic Routing = "static"
	RoutingBGP    Routing = "bgp"
)

// IPsec holds the IKE/ESP parameters, strongSwan proposal syntax.
type IPsec struct {
	IKEProposal string        `json:"ike_proposal"`
	IKELifetime time.Duration `json:"ike_lifetime"`
	ESPProposal string        `json:"esp_proposal"`
	ESPLifetime time.Duration `json:"esp_lifetime"`
	DPD         time.Duration `json:"dpd"`
}

// Topology is the network-wide intent.
type Topology struct {
	Mode    Mode    `json:"mode"`
	Match   Match   `json:"match"`
	IPsec   IPsec   `json:"ipsec"`
	MTU     int     `json:"mtu"`
	Routing Routing `json:"routing,omitempty"`
	// PathPolicy: probing, failover and SLA steering (see policy.go).
	PathPolicy PathPolicy `json:"path_policy,omitzero"`
	// TransitPrefixes (hub-and-spoke): summaries every spoke routes via its
	// first hub instead of one route per other spoke's LAN, so a spoke's
	// desired state does not grow with the network.
	TransitPrefixes []netip.Prefix `json:"transit_prefixes,omitempty"`
}

// Defaults of the seed recipe: IKEv2 AES/SHA-256/DH14 for 8 h, ESP AES-GCM
// with PFS (DH14, as the seed's "esp-policy ... 14") for 1 h, GRE MTU 1400.
// The ESP default carries a DH group because many third-party peers require
// PFS on CHILD_SA rekeys: without one the first rekey fails and the tunnel
// dies at the first ESP lifetime. An explicitly stored ESP proposal without
// a group ("aes256gcm16") stays valid and means "no PFS".
const (
	DefaultIKEProposal = "aes256-sha256-modp2048"
	DefaultIKELifetime = 28800 * time.Second
	DefaultESPProposal = "aes256gcm16-modp2048"
	DefaultESPLifetime = 3600 * time.Second
	DefaultDPD         = 30 * time.Second
	DefaultMTU         = 1400
)

// PreviousESPProposal is the ESP default of versions before PFS became the
// default. A network those versions stored with the default keeps it
// (network.PinPreviousDefaults) rather than re-keying every tunnel at the
// upgrade.
const PreviousESPProposal = "aes256gcm16"

// WithDefaults returns t with every unset field defaulted.
func (t Topology) WithDefaults() Topology {
	if t.Match == "" {
		t.Match = MatchSameName
	}
	if t.IPsec.IKEProposal == "" {
		t.IPsec.IKEProposal = DefaultIKEProposal
	}
	if t.IPsec.IKELifetime == 0 {
		t.IPsec.IKELifetime = DefaultIKELifetime
	}
	if t.IPsec.ESPProposal == "" {
		t.IPsec.ESPProposal = DefaultESPProposal
	}
	if t.IPsec.ESPLifetime == 0 {
		t.IPsec.ESPLifetime = DefaultESPLifetime
	}
	if t.IPsec.DPD == 0 {
		t.IPsec.DPD = DefaultDPD
	}
	if t.MTU == 0 {
		t.MTU = DefaultMTU
	}
	if t.Routing == "" {
		t.Routing = RoutingStatic
	}
	t.PathPolicy = t.PathPolicy.WithDefaults()
	return t
}

var (
	// nameRE: a DNS label, so names fit in link names, etcd keys and URLs.
	nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)
	// transportRE is shorter: a tunnel's link name carries it.
	transportRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?$`)
)

// q quotes a value from the caller for an error message, at most
// validity.MaxQuote bytes of it: errors never echo unbounded input.
func q(s string) string { return validity.Quote(s) }

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalid, field, fmt.Sprintf(format, args...))
}

// ValidateName checks a site name.
func ValidateName(field, name string) error {
	if !nameRE.MatchString(name) {
		return invalid(field, "%s must be 1-32 lowercase letters, digits or '-', not starting or ending with '-'", q(name))
	}
	return nil
}

// ParseTransportAddr parses a transport address: an IPv4 address usable on
// a WAN (validity.Underlay) or "dynamic".
func ParseTransportAddr(field, s string) (Transport, error) {
	if s == Dynamic {
		return Transport{Dynamic: true}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return Transport{}, invalid(field, "%s is not an IPv4 address or %q", q(s), Dynamic)
	}
	if err := validity.Underlay(a); err != nil {
		return Transport{}, invalid(field, "%v", err)
	}
	return Transport{Addr: a}, nil
}

// ParsePrefix parses a LAN (or transit) prefix in canonical CIDR form
// (host bits zero) and checks it with validity.LANPrefix.
func ParsePrefix(field, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, invalid(field, "%s is not a CIDR prefix", q(s))
	}
	if p.Addr().Is4() && p.Masked() != p {
		return netip.Prefix{}, invalid(field, "%s has host bits set (did you mean %s?)", q(s), p.Masked())
	}
	if err := validity.LANPrefix(p); err != nil {
		return netip.Prefix{}, invalid(field, "%v", err)
	}
	return p, nil
}

// Validate checks one site on its own (names, roles, transports, prefixes,
// ASN) with the rules of edge/dataplane/validity: its LAN prefixes must not
// overlap each other nor contain one of its own transport addresses, and
// two transports must not share an address. It does not look at other
// sites: see Index.CheckSite. It is O(n log n) in the site's prefixes.
func (s Site) Validate() error {
	if err := ValidateName("site.name", s.Name); err != nil {
		return err
	}
	if s.Role != RoleHub && s.Role != RoleSpoke {
		return invalid("site.role", "%s must be %q or %q", q(string(s.Role)), RoleHub, RoleSpoke)
	}
	if len(s.Transports) == 0 {
		return invalid("site.transports", "a site needs at least one WAN transport")
	}
	if s.ASN != 0 {
		if err := validity.ASN(s.ASN); err != nil {
			return invalid("site.asn", "%v", err)
		}
	}
	seen := map[string]bool{}
	addrs := make([]validity.AddrEntry[int], 0, len(s.Transports))
	for i, t := range s.Transports {
		field := fmt.Sprintf("site.transports[%d].name", i)
		if !transportRE.MatchString(t.Name) {
			return invalid(field, "%s must be 1-12 lowercase letters, digits or '-'", q(t.Name))
		}
		if seen[t.Name] {
			return fmt.Errorf("%w: %s: transport %q is listed twice", ErrInvalid, field, t.Name)
		}
		seen[t.Name] = true
		af := fmt.Sprintf("site.transports[%d].address", i)
		if t.Dynamic == t.Addr.IsValid() {
			return invalid(af, "needs an IPv4 address or %q", Dynamic)
		}
		if t.Dynamic {
			continue
		}
		if err := validity.Underlay(t.Addr); err != nil {
			return invalid(af, "%v", err)
		}
		addrs = append(addrs, validity.AddrEntry[int]{Addr: t.Addr, Val: i})
	}
	own := validity.NewAddrs(addrs)
	for _, a := range addrs {
		if o, ok := own.Find(a.Addr, func(j int) bool { return j == a.Val }); ok {
			return invalid(fmt.Sprintf("site.transports[%d].address", max(a.Val, o.Val)), "%s is also the address of transports[%d]", a.Addr, min(a.Val, o.Val))
		}
	}
	if len(s.LANPrefixes) == 0 {
		return invalid("site.lan_prefixes", "a site needs at least one LAN prefix")
	}
	lans := make([]validity.PrefixEntry[int], 0, len(s.LANPrefixes))
	for i, p := range s.LANPrefixes {
		field := fmt.Sprintf("site.lan_prefixes[%d]", i)
		if err := validity.LANPrefix(p); err != nil {
			return invalid(field, "%v", err)
		}
		if a, ok := own.In(p, nil); ok {
			return invalid(field, "%s contains %s, the address of this site's transport %q: its tunnels would be routed into themselves", p, a.Addr, s.Transports[a.Val].Name)
		}
		lans = append(lans, validity.PrefixEntry[int]{Prefix: p, Val: i})
	}
	if a, b, ok := validity.FirstOverlap(lans); ok {
		i, j := min(a.Val, b.Val), max(a.Val, b.Val)
		return invalid(fmt.Sprintf("site.lan_prefixes[%d]", j), "%s overlaps %s of the same site", s.LANPrefixes[j], s.LANPrefixes[i])
	}
	return nil
}

// Validate checks a topology against the sites it would connect: its own
// fields with the rules of edge/dataplane/validity (proposals parsed,
// lifetimes and DPD within bounds, ESP <= IKE once defaults are filled in,
// transit prefixes), and each site's LANs and declared addresses against
// the transit prefixes (CheckTransit). Addresses edges report for dynamic
// transports are checked by CheckUnderlays. O((sites + prefixes) log n).
func (t Topology) Validate(sites []Site) error {
	switch t.Mode {
	case ModeNone, ModeFullMesh, ModeHubAndSpoke:
	default:
		return invalid("topology.mode", "%s must be %q or %q", q(string(t.Mode)), ModeFullMesh, ModeHubAndSpoke)
	}
	switch t.Match {
	case "", MatchSameName, MatchAllPairs:
	default:
		return invalid("topology.transport_match", "%s must be %q or %q", q(string(t.Match)), MatchSameName, MatchAllPairs)
	}
	switch t.Routing {
	case "", RoutingStatic, RoutingBGP:
	default:
		return invalid("topology.routing", "%s must be %q or %q", q(string(t.Routing)), RoutingStatic, RoutingBGP)
	}
	if err := t.IPsec.Validate(); err != nil {
		return err
	}
	if t.MTU != 0 && (t.MTU < 1280 || t.MTU > 9000) {
		return invalid("topology.mtu", "%d must be between 1280 and 9000", t.MTU)
	}
	if err := ValidatePathPolicy(t.PathPolicy); err != nil {
		return err
	}
	transit := make([]validity.PrefixEntry[int], 0, len(t.TransitPrefixes))
	for i, p := range t.TransitPrefixes {
		if err := validity.LANPrefix(p); err != nil {
			return invalid(fmt.Sprintf("topology.transit_prefixes[%d]", i), "%v", err)
		}
		transit = append(transit, validity.PrefixEntry[int]{Prefix: p, Val: i})
	}
	if a, b, ok := validity.FirstOverlap(transit); ok {
		i, j := min(a.Val, b.Val), max(a.Val, b.Val)
		return invalid(fmt.Sprintf("topology.transit_prefixes[%d]", j), "%s overlaps %s", t.TransitPrefixes[j], t.TransitPrefixes[i])
	}
	tx := validity.NewPrefixes(transit)
	for _, s := range sites {
		if err := checkTransit(s, tx); err != nil {
			return err
		}
	}
	if t.Mode == ModeHubAndSpoke && !slices.ContainsFunc(sites, Site.Hub) {
		return fmt.Errorf("%w: topology.mode: hub-and-spoke needs at least one site with role hub (none of the %d sites is)", ErrPrecondition, len(sites))
	}
	return nil
}

// Validate checks the IPsec parameters; zero values mean "default" and
// pass, but ESP <= IKE is checked with the defaults filled in (that is
// what the edges receive).
func (p IPsec) Validate() error {
	for _, pr := range []struct {
		field string
		kind  validity.Kind
		v     string
	}{{"topology.ipsec.ike_proposal", validity.IKE, p.IKEProposal}, {"topology.ipsec.esp_proposal", validity.ESP, p.ESPProposal}} {
		if pr.v == "" {
			continue
		}
		if err := validity.Proposal(pr.kind, pr.v); err != nil {
			return invalid(pr.field, "%v", err)
		}
	}
	for _, d := range []struct {
		field string
		v     time.Duration
		check func(time.Duration) error
	}{
		{"topology.ipsec.ike_lifetime_seconds", p.IKELifetime, validity.IKELifetime},
		{"topology.ipsec.esp_lifetime_seconds", p.ESPLifetime, validity.ESPLifetime},
		{"topology.ipsec.dpd_seconds", p.DPD, validity.DPD},
	} {
		if d.v == 0 {
			continue
		}
		if err := d.check(d.v); err != nil {
			return invalid(d.field, "%v", err)
		}
	}
	ike, esp := cmpOr(p.IKELifetime, DefaultIKELifetime), cmpOr(p.ESPLifetime, DefaultESPLifetime)
	if err := validity.ESPWithinIKE(esp, ike); err != nil {
		return invalid("topology.ipsec.esp_lifetime_seconds", "%v", err)
	}
	return nil
}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// SortSites orders sites by name, the order every derived list follows.
func SortSites(sites []Site) {
	slices.SortFunc(sites, func(a, b Site) int { return strings.Compare(a.Name, b.Name) })
}

// CheckSite checks the same clashes as Index.CheckSite between s and
// others (which may hold s's previous version, skipped by name), the other
// way round: it indexes s (its few prefixes and addresses) and looks every
// other site's prefixes and addresses up in that index, O(n log k) for a
// site with k prefixes and transports and no allocation per other site.
// That is what one site's change costs at 5,000 sites; a whole declaration
// uses one Index instead (O(n log n)). observed (may be nil) holds the
// addresses edges reported for dynamic transports.
func CheckSite(s Site, others []Site, observed map[string]map[string]netip.Addr, tunnelPool netip.Prefix) error {
	me := NewIndex([]Site{s}, observed)
	if err := me.checkOwn(s, tunnelPool); err != nil {
		return err
	}
	for _, o := range others {
		if o.Name == s.Name {
			continue
		}
		for _, p := range o.LANPrefixes {
			if l, ok := me.lans.Overlapping(p, nil); ok {
				return conflict(fmt.Sprintf("site.lan_prefixes[%d]", l.Val.i), "%s overlaps %s of site %q", l.Prefix, p, o.Name)
			}
			if u, ok := me.addrs.In(p, nil); ok {
				return conflict(fmt.Sprintf("site.transports[%d].address", u.Val.i), "%s is inside %s, a LAN prefix of site %q", me.what(u), p, o.Name)
			}
		}
		for i, t := range o.Transports {
			a, obs := underlayOf(observed, o.Name, t)
			if !a.IsValid() {
				continue
			}
			if l, ok := me.lans.Containing(a, nil); ok {
				desc := (&Index{sites: []Site{o}}).describe(ref{i: int32(i), observed: obs}, a)
				return conflict(fmt.Sprintf("site.lan_prefixes[%d]", l.Val.i), "%s contains %s: its tunnels would be routed into themselves", l.Prefix, desc)
			}
			if u, ok := me.addrs.Find(a, nil); ok {
				return conflict(fmt.Sprintf("site.transports[%d].address", u.Val.i), "%s is already used by site %q (transport %q)", me.what(u), o.Name, t.Name)
			}
		}
		if s.ASN != 0 && s.ASN == o.ASN {
			return conflict("site.asn", "%d is already used by site %q", s.ASN, o.Name)
		}
	}
	return nil
}

// CheckTransit refuses a site whose transport address lies inside a
// transit prefix (spokes would route the GRE packets to that address into
// a tunnel: recursive routing) or whose LAN contains a transit prefix
// (the summary would pull part of that LAN into a tunnel): the edge
// refuses both (dataplane.Desired.Validate).
func (t Topology) CheckTransit(s Site) error {
	if len(t.TransitPrefixes) == 0 {
		return nil
	}
	return checkTransit(s, t.transitIndex())
}

func (t Topology) transitIndex() *validity.Prefixes[int] {
	es := make([]validity.PrefixEntry[int], len(t.TransitPrefixes))
	for i, p := range t.TransitPrefixes {
		es[i] = validity.PrefixEntry[int]{Prefix: p, Val: i}
	}
	return validity.NewPrefixes(es)
}

func checkTransit(s Site, tx *validity.Prefixes[int]) error {
	if tx.Len() == 0 {
		return nil
	}
	for i, l := range s.LANPrefixes {
		// A summary may contain a LAN (the LAN is more specific and
		// stays local); one equal to or inside a LAN would take part
		// of that LAN into a tunnel, and the edge refuses it.
		if p, ok := tx.Within(l, nil); ok {
			return fmt.Errorf("%w: site %q lan_prefixes[%d] %s contains topology.transit_prefixes %s (a transit summary must be wider than every LAN it overlaps)", ErrConflict, s.Name, i, l, p.Prefix)
		}
	}
	for i, tr := range s.Transports {
		if p, ok := tx.Containing(tr.Addr, nil); ok {
			return fmt.Errorf("%w: site %q transports[%d].address %s is inside topology.transit_prefixes %s (tunnels would be routed into themselves)", ErrConflict, s.Name, i, tr.Addr, p.Prefix)
		}
	}
	return nil
}

// CheckUnderlays refuses a topology whose transit prefixes contain an
// address an edge reported for a dynamic transport (x holds them).
func (t Topology) CheckUnderlays(x *Index) error {
	if len(t.TransitPrefixes) == 0 {
		return nil
	}
	tx := t.transitIndex()
	for _, u := range x.underlays {
		if p, ok := tx.Containing(u.Addr, nil); ok {
			return fmt.Errorf("%w: topology.transit_prefixes[%d]: %s contains %s (tunnels would be routed into themselves)", ErrConflict, p.Val, p.Prefix, x.describe(u.Val, u.Addr))
		}
	}
	return nil
}
