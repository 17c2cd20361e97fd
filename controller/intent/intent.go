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
// for 1 h, GRE MTU 1400.
const (
	DefaultIKEProposal = "aes256-sha256-modp2048"
	DefaultIKELifetime = 28800 * time.Second
	DefaultESPProposal = "aes256gcm16"
	DefaultESPLifetime = 3600 * time.Second
	DefaultDPD         = 30 * time.Second
	DefaultMTU         = 1400
)

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
	// proposalRE: strongSwan proposal syntax, e.g. aes256-sha256-modp2048.
	proposalRE = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*(,[a-z0-9]+(-[a-z0-9]+)*)*$`)
)

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalid, field, fmt.Sprintf(format, args...))
}

// ValidateName checks a site name.
func ValidateName(field, name string) error {
	if !nameRE.MatchString(name) {
		return invalid(field, "%q must be 1-32 lowercase letters, digits or '-', not starting or ending with '-'", name)
	}
	return nil
}

// ParseTransportAddr parses a transport address: an IPv4 address or "dynamic".
func ParseTransportAddr(field, s string) (Transport, error) {
	if s == Dynamic {
		return Transport{Dynamic: true}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return Transport{}, invalid(field, "%q is not an IPv4 address or %q", s, Dynamic)
	}
	if a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return Transport{}, invalid(field, "%s cannot be a tunnel endpoint", a)
	}
	return Transport{Addr: a}, nil
}

// ParsePrefix parses a LAN prefix in canonical CIDR form (host bits zero).
func ParsePrefix(field, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, invalid(field, "%q is not a CIDR prefix", s)
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, invalid(field, "%q: only IPv4 prefixes are supported", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, invalid(field, "%q has host bits set (did you mean %s?)", s, p.Masked())
	}
	if p.Bits() == 0 {
		return netip.Prefix{}, invalid(field, "%q: a default route is not a LAN prefix", s)
	}
	return p, nil
}

// Validate checks one site on its own (names, roles, transports, prefixes).
// It does not look at other sites: see CheckSite.
func (s Site) Validate() error {
	if err := ValidateName("site.name", s.Name); err != nil {
		return err
	}
	if s.Role != RoleHub && s.Role != RoleSpoke {
		return invalid("site.role", "%q must be %q or %q", s.Role, RoleHub, RoleSpoke)
	}
	if len(s.Transports) == 0 {
		return invalid("site.transports", "a site needs at least one WAN transport")
	}
	seen := map[string]bool{}
	for i, t := range s.Transports {
		field := fmt.Sprintf("site.transports[%d].name", i)
		if !transportRE.MatchString(t.Name) {
			return invalid(field, "%q must be 1-12 lowercase letters, digits or '-'", t.Name)
		}
		if seen[t.Name] {
			return fmt.Errorf("%w: %s: transport %q is listed twice", ErrInvalid, field, t.Name)
		}
		seen[t.Name] = true
		if t.Dynamic == t.Addr.IsValid() {
			return invalid(fmt.Sprintf("site.transports[%d].address", i), "needs an IPv4 address or %q", Dynamic)
		}
	}
	if len(s.LANPrefixes) == 0 {
		return invalid("site.lan_prefixes", "a site needs at least one LAN prefix")
	}
	for i, p := range s.LANPrefixes {
		field := fmt.Sprintf("site.lan_prefixes[%d]", i)
		if _, err := ParsePrefix(field, p.String()); err != nil {
			return err
		}
		for j := range i {
			if s.LANPrefixes[j].Overlaps(p) {
				return invalid(field, "%s overlaps %s of the same site", p, s.LANPrefixes[j])
			}
		}
	}
	return nil
}

// Validate checks a topology against the sites it would connect.
func (t Topology) Validate(sites []Site) error {
	switch t.Mode {
	case ModeNone, ModeFullMesh, ModeHubAndSpoke:
	default:
		return invalid("topology.mode", "%q must be %q or %q", t.Mode, ModeFullMesh, ModeHubAndSpoke)
	}
	switch t.Match {
	case "", MatchSameName, MatchAllPairs:
	default:
		return invalid("topology.transport_match", "%q must be %q or %q", t.Match, MatchSameName, MatchAllPairs)
	}
	switch t.Routing {
	case "", RoutingStatic, RoutingBGP:
	default:
		return invalid("topology.routing", "%q must be %q or %q", t.Routing, RoutingStatic, RoutingBGP)
	}
	for field, p := range map[string]string{"topology.ipsec.ike_proposal": t.IPsec.IKEProposal, "topology.ipsec.esp_proposal": t.IPsec.ESPProposal} {
		if p != "" && !proposalRE.MatchString(p) {
			return invalid(field, "%q is not a strongSwan proposal (like aes256-sha256-modp2048)", p)
		}
	}
	if t.IPsec.IKELifetime < 0 || (t.IPsec.IKELifetime != 0 && t.IPsec.IKELifetime < 10*time.Minute) {
		return invalid("topology.ipsec.ike_lifetime_seconds", "%s is below the 600 s minimum", t.IPsec.IKELifetime)
	}
	if t.IPsec.ESPLifetime < 0 || (t.IPsec.ESPLifetime != 0 && t.IPsec.ESPLifetime < 5*time.Minute) {
		return invalid("topology.ipsec.esp_lifetime_seconds", "%s is below the 300 s minimum", t.IPsec.ESPLifetime)
	}
	if t.IPsec.IKELifetime != 0 && t.IPsec.ESPLifetime != 0 && t.IPsec.ESPLifetime > t.IPsec.IKELifetime {
		return invalid("topology.ipsec.esp_lifetime_seconds", "ESP lifetime %s exceeds the IKE lifetime %s", t.IPsec.ESPLifetime, t.IPsec.IKELifetime)
	}
	if t.MTU != 0 && (t.MTU < 1280 || t.MTU > 9000) {
		return invalid("topology.mtu", "%d must be between 1280 and 9000", t.MTU)
	}
	if err := t.PathPolicy.Validate(); err != nil {
		return err
	}
	for i, p := range t.TransitPrefixes {
		field := fmt.Sprintf("topology.transit_prefixes[%d]", i)
		if _, err := ParsePrefix(field, p.String()); err != nil {
			return err
		}
		for j := range i {
			if t.TransitPrefixes[j].Overlaps(p) {
				return invalid(field, "%s overlaps %s", p, t.TransitPrefixes[j])
			}
		}
	}
	for _, s := range sites {
		if err := t.CheckTransit(s); err != nil {
			return err
		}
	}
	if t.Mode == ModeHubAndSpoke && !slices.ContainsFunc(sites, Site.Hub) {
		return fmt.Errorf("%w: topology.mode: hub-and-spoke needs at least one site with role hub (none of the %d sites is)", ErrPrecondition, len(sites))
	}
	return nil
}

// SortSites orders sites by name, the order every derived list follows.
func SortSites(sites []Site) {
	slices.SortFunc(sites, func(a, b Site) int { return strings.Compare(a.Name, b.Name) })
}

// CheckSite checks the clashes that make a network unusable between one
// new or changed site and the others (which are assumed consistent among
// themselves): duplicate names are the caller's check; LAN prefixes that
// overlap between sites (routing would be ambiguous), the same public
// address on two sites (tunnels could not be told apart), duplicate ASNs,
// and LAN prefixes inside the tunnel pool. It runs in time linear in the
// number of sites: a change to one site of a large network does not
// re-check every pair. The first problem found is returned, naming the
// field and the other site. others may contain s's previous version
// (same name), which is skipped.
func CheckSite(s Site, others []Site, tunnelPool netip.Prefix) error {
	for i, p := range s.LANPrefixes {
		if tunnelPool.IsValid() && p.Overlaps(tunnelPool) {
			return fmt.Errorf("%w: site.lan_prefixes[%d]: %s overlaps the tunnel pool %s", ErrConflict, i, p, tunnelPool)
		}
	}
	for _, o := range others {
		if o.Name == s.Name {
			continue
		}
		for i, t := range s.Transports {
			if !t.Addr.IsValid() {
				continue
			}
			for _, ot := range o.Transports {
				if ot.Addr == t.Addr {
					return fmt.Errorf("%w: site.transports[%d].address: %s is already used by site %q", ErrConflict, i, t.Addr, o.Name)
				}
			}
		}
		if s.ASN != 0 && s.ASN == o.ASN {
			return fmt.Errorf("%w: site.asn: %d is already used by site %q", ErrConflict, s.ASN, o.Name)
		}
		for i, p := range s.LANPrefixes {
			for _, op := range o.LANPrefixes {
				if op.Overlaps(p) {
					return fmt.Errorf("%w: site.lan_prefixes[%d]: %s overlaps %s of site %q", ErrConflict, i, p, op, o.Name)
				}
			}
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
	for _, p := range t.TransitPrefixes {
		for i, l := range s.LANPrefixes {
			// A summary may contain a LAN (the LAN is more specific and
			// stays local); one equal to or inside a LAN would take part
			// of that LAN into a tunnel, and the edge refuses it.
			if l.Bits() <= p.Bits() && l.Contains(p.Addr()) {
				return fmt.Errorf("%w: site %q lan_prefixes[%d] %s contains topology.transit_prefixes %s (a transit summary must be wider than every LAN it overlaps)", ErrConflict, s.Name, i, l, p)
			}
		}
		for i, tr := range s.Transports {
			if tr.Addr.IsValid() && p.Contains(tr.Addr) {
				return fmt.Errorf("%w: site %q transports[%d].address %s is inside topology.transit_prefixes %s (tunnels would be routed into themselves)", ErrConflict, s.Name, i, tr.Addr, p)
			}
		}
	}
	return nil
}
