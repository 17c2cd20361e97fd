// Package netfile owns the network file: one YAML document that declares a
// meshwan network as code (its sites and its topology), parsed into the
// controller's domain types. It is pure. Every error names the file, the
// line and column and the field (`net.yaml:12:7: sites[1].lan_prefixes[0]:
// "10.2.1.0/33" is not a CIDR prefix`), and Pos maps the field paths the
// controller's errors name back to where they are written.
package netfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/meshwan/meshwan/controller/intent"
	"gopkg.in/yaml.v3"
)

// File is a parsed network file.
type File struct {
	Name     string
	Sites    []intent.Site // in file order
	Topology intent.Topology
	pos      map[string]Pos
}

// Pos is a place in the file (1-based).
type Pos struct{ Line, Column int }

// ErrInvalid wraps every parse and validation error.
var ErrInvalid = errors.New("invalid network file")

// Error is a problem at a place in the file.
type Error struct {
	File  string
	Pos   Pos
	Field string
	Msg   string
}

// Error bounds what it quotes: a field path built from an unknown key, or a
// message quoting a value, may hold whatever the file holds.
func (e *Error) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Pos.Line, e.Pos.Column, bounded(e.Msg, maxMsg))
	}
	return fmt.Sprintf("%s:%d:%d: %s: %s", e.File, e.Pos.Line, e.Pos.Column, bounded(e.Field, maxField), bounded(e.Msg, maxMsg))
}

// Bounds of an Error's parts, in bytes (the whole stays under 512).
const (
	maxField = 120
	maxMsg   = 300
)

// bounded cuts s to at most n bytes (on a rune boundary) and says so.
func bounded(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…(truncated)")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…(truncated)"
}

func (e *Error) Unwrap() error { return ErrInvalid }

// Parse reads a network file named name. It checks every field on its own
// and the sites and topology as a whole (intent's validation, without the
// controller's tunnel pool or the sites the file does not declare); the
// controller checks the rest when the file is planned or applied.
func Parse(name string, data []byte) (*File, error) {
	p := &parser{f: &File{Name: name, pos: map[string]Pos{}}}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, p.yamlErr(err)
	}
	if len(doc.Content) == 0 {
		return nil, &Error{File: name, Pos: Pos{1, 1}, Msg: "empty file: it needs sites and topology"}
	}
	if err := p.file(doc.Content[0]); err != nil {
		return nil, err
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	return p.f, nil
}

// Pos returns where field (a path like "sites[1].lan_prefixes[0]" or
// "topology.path_policy.sla_classes[0].name") is written, or the nearest
// enclosing field that is.
func (f *File) Pos(field string) (Pos, bool) {
	for field != "" {
		if p, ok := f.pos[field]; ok {
			return p, true
		}
		i := strings.LastIndexAny(field, ".[")
		if i < 0 {
			break
		}
		field = field[:i]
	}
	return Pos{}, false
}

// SiteIndex returns the index of the named site in the file.
func (f *File) SiteIndex(name string) (int, bool) {
	i := slices.IndexFunc(f.Sites, func(s intent.Site) bool { return s.Name == name })
	return i, i >= 0
}

var (
	siteRE  = regexp.MustCompile(`site "([^"]*)"`)
	fieldRE = regexp.MustCompile(`\b((?:site|topology)(?:\.[a-z_]+(?:\[\d+\])?)+)`)
)

// Locate prefixes a message from the controller (or from intent's
// validation) with the file position of the site and field it names, when
// it names one that is in the file: `net.yaml:9:9: site "br4": ...`.
func (f *File) Locate(msg string) string {
	path := ""
	if m := siteRE.FindStringSubmatch(msg); m != nil {
		if i, ok := f.SiteIndex(m[1]); ok {
			path = fmt.Sprintf("sites[%d]", i)
		}
	}
	if m := fieldRE.FindStringSubmatch(msg); m != nil {
		field := m[1]
		if rest, ok := strings.CutPrefix(field, "site."); ok && path != "" {
			path += "." + rest
		} else if strings.HasPrefix(field, "topology") {
			path = field
		}
	}
	if path == "" {
		return msg
	}
	p, ok := f.Pos(path)
	if !ok {
		return msg
	}
	return fmt.Sprintf("%s:%d:%d: %s", f.Name, p.Line, p.Column, bounded(msg, maxMsg))
}

type parser struct {
	f *File
}

var yamlLineRE = regexp.MustCompile(`line (\d+)(?:, column (\d+))?: (.*)`)

func (p *parser) yamlErr(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		col, _ := strconv.Atoi(m[2])
		return &Error{File: p.f.Name, Pos: Pos{line, max(col, 1)}, Msg: m[3]}
	}
	return &Error{File: p.f.Name, Pos: Pos{1, 1}, Msg: msg}
}

func (p *parser) errAt(n *yaml.Node, field, format string, args ...any) error {
	return &Error{File: p.f.Name, Pos: Pos{n.Line, n.Column}, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) mark(field string, n *yaml.Node) { p.f.pos[field] = Pos{n.Line, n.Column} }

// mapping returns the values of a mapping node by key, refusing unknown
// and repeated keys.
func (p *parser) mapping(n *yaml.Node, field string, known ...string) (map[string]*yaml.Node, error) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		return nil, p.errAt(n, field, "must be a mapping (key: value)")
	}
	out := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		sub := join(field, k.Value)
		if !slices.Contains(known, k.Value) {
			return nil, p.errAt(k, sub, "unknown field (known: %s)", strings.Join(known, ", "))
		}
		if _, dup := out[k.Value]; dup {
			return nil, p.errAt(k, sub, "given twice")
		}
		out[k.Value] = v
		p.mark(sub, v)
	}
	return out, nil
}

func join(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}

func (p *parser) seq(n *yaml.Node, field string) ([]*yaml.Node, error) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, p.errAt(n, field, "must be a list")
	}
	for i, c := range n.Content {
		p.mark(fmt.Sprintf("%s[%d]", field, i), c)
	}
	return n.Content, nil
}

func (p *parser) str(n *yaml.Node, field string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return "", p.errAt(n, field, "must be a string")
	}
	return n.Value, nil
}

func (p *parser) strs(n *yaml.Node, field string) ([]string, error) {
	items, err := p.seq(n, field)
	if err != nil {
		return nil, err
	}
	var out []string
	for i, c := range items {
		s, err := p.str(c, fmt.Sprintf("%s[%d]", field, i))
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func (p *parser) uint(n *yaml.Node, field string, bits int) (uint64, error) {
	v, err := strconv.ParseUint(n.Value, 10, bits)
	if n.Kind != yaml.ScalarNode || err != nil {
		return 0, p.errAt(n, field, "%q must be a whole number from 0 to %d", n.Value, uint64(1)<<bits-1)
	}
	return v, nil
}

func (p *parser) float(n *yaml.Node, field string) (float64, error) {
	v, err := strconv.ParseFloat(n.Value, 64)
	if n.Kind != yaml.ScalarNode || err != nil {
		return 0, p.errAt(n, field, "%q must be a number", n.Value)
	}
	return v, nil
}

func (p *parser) bool(n *yaml.Node, field string) (bool, error) {
	var b bool
	if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
		return false, p.errAt(n, field, "%q must be true or false", n.Value)
	}
	return b, nil
}

// domain runs one of intent's parsers and moves its error to node n.
func (p *parser) domain(n *yaml.Node, field string, err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	msg = strings.TrimPrefix(msg, intent.ErrInvalid.Error()+": ")
	// intent names the field as the API does; the position says where.
	if _, rest, ok := strings.Cut(msg, ": "); ok {
		msg = rest
	}
	return p.errAt(n, field, "%s", msg)
}

func (p *parser) file(root *yaml.Node) error {
	m, err := p.mapping(root, "", "sites", "topology")
	if err != nil {
		return err
	}
	sites, ok := m["sites"]
	if !ok {
		return p.errAt(root, "sites", "missing: the file declares the network's sites")
	}
	items, err := p.seq(sites, "sites")
	if err != nil {
		return err
	}
	for i, n := range items {
		s, err := p.site(n, fmt.Sprintf("sites[%d]", i))
		if err != nil {
			return err
		}
		p.f.Sites = append(p.f.Sites, s)
	}
	t, ok := m["topology"]
	if !ok {
		return p.errAt(root, "topology", "missing: the file declares the topology (at least its mode)")
	}
	p.f.Topology, err = p.topology(t, "topology")
	return err
}

func (p *parser) site(n *yaml.Node, field string) (intent.Site, error) {
	var s intent.Site
	m, err := p.mapping(n, field, "name", "role", "transports", "lan_prefixes", "asn")
	if err != nil {
		return s, err
	}
	v, ok := m["name"]
	if !ok {
		return s, p.errAt(n, field+".name", "missing")
	}
	if s.Name, err = p.str(v, field+".name"); err != nil {
		return s, err
	}
	if err := p.domain(v, field+".name", intent.ValidateName("site.name", s.Name)); err != nil {
		return s, err
	}
	s.Role = intent.RoleSpoke
	if v, ok := m["role"]; ok {
		role, err := p.str(v, field+".role")
		if err != nil {
			return s, err
		}
		switch intent.Role(role) {
		case intent.RoleHub, intent.RoleSpoke:
			s.Role = intent.Role(role)
		default:
			return s, p.errAt(v, field+".role", "%q must be hub or spoke", role)
		}
	}
	if v, ok := m["transports"]; ok {
		items, err := p.seq(v, field+".transports")
		if err != nil {
			return s, err
		}
		for i, tn := range items {
			tf := fmt.Sprintf("%s.transports[%d]", field, i)
			tm, err := p.mapping(tn, tf, "name", "address")
			if err != nil {
				return s, err
			}
			var name, addr string
			if x, ok := tm["name"]; !ok {
				return s, p.errAt(tn, tf+".name", "missing")
			} else if name, err = p.str(x, tf+".name"); err != nil {
				return s, err
			}
			x, ok := tm["address"]
			if !ok {
				return s, p.errAt(tn, tf+".address", "missing (an IPv4 address or dynamic)")
			}
			if addr, err = p.str(x, tf+".address"); err != nil {
				return s, err
			}
			tr, err := intent.ParseTransportAddr(tf+".address", addr)
			if err := p.domain(x, tf+".address", err); err != nil {
				return s, err
			}
			tr.Name = name
			s.Transports = append(s.Transports, tr)
		}
	}
	if v, ok := m["lan_prefixes"]; ok {
		items, err := p.seq(v, field+".lan_prefixes")
		if err != nil {
			return s, err
		}
		for i, pn := range items {
			pf := fmt.Sprintf("%s.lan_prefixes[%d]", field, i)
			raw, err := p.str(pn, pf)
			if err != nil {
				return s, err
			}
			pfx, err := intent.ParsePrefix(pf, raw)
			if err := p.domain(pn, pf, err); err != nil {
				return s, err
			}
			s.LANPrefixes = append(s.LANPrefixes, pfx)
		}
	}
	if v, ok := m["asn"]; ok {
		asn, err := p.uint(v, field+".asn", 32)
		if err != nil {
			return s, err
		}
		s.ASN = uint32(asn)
	}
	return s, nil
}

func (p *parser) topology(n *yaml.Node, field string) (intent.Topology, error) {
	var t intent.Topology
	m, err := p.mapping(n, field, "mode", "transport_match", "ipsec", "mtu", "routing", "path_policy", "transit_prefixes")
	if err != nil {
		return t, err
	}
	enum := func(key string, choices ...string) (string, error) {
		v, ok := m[key]
		if !ok {
			return "", nil
		}
		s, err := p.str(v, field+"."+key)
		if err != nil {
			return "", err
		}
		if !slices.Contains(choices, s) {
			return "", p.errAt(v, field+"."+key, "%q must be one of %s", s, strings.Join(choices, ", "))
		}
		return s, nil
	}
	mode, err := enum("mode", string(intent.ModeFullMesh), string(intent.ModeHubAndSpoke), "none")
	if err != nil {
		return t, err
	}
	if _, ok := m["mode"]; !ok {
		return t, p.errAt(n, field+".mode", "missing (full-mesh, hub-and-spoke or none)")
	}
	if mode != "none" {
		t.Mode = intent.Mode(mode)
	}
	match, err := enum("transport_match", string(intent.MatchSameName), string(intent.MatchAllPairs))
	if err != nil {
		return t, err
	}
	t.Match = intent.Match(match)
	routing, err := enum("routing", string(intent.RoutingStatic), string(intent.RoutingBGP))
	if err != nil {
		return t, err
	}
	t.Routing = intent.Routing(routing)
	if v, ok := m["mtu"]; ok {
		mtu, err := p.uint(v, field+".mtu", 16)
		if err != nil {
			return t, err
		}
		t.MTU = int(mtu)
	}
	if v, ok := m["ipsec"]; ok {
		f := field + ".ipsec"
		im, err := p.mapping(v, f, "ike_proposal", "ike_lifetime_seconds", "esp_proposal", "esp_lifetime_seconds", "dpd_seconds")
		if err != nil {
			return t, err
		}
		for key, dst := range map[string]*string{"ike_proposal": &t.IPsec.IKEProposal, "esp_proposal": &t.IPsec.ESPProposal} {
			if x, ok := im[key]; ok {
				if *dst, err = p.str(x, f+"."+key); err != nil {
					return t, err
				}
			}
		}
		for key, dst := range map[string]*time.Duration{"ike_lifetime_seconds": &t.IPsec.IKELifetime, "esp_lifetime_seconds": &t.IPsec.ESPLifetime, "dpd_seconds": &t.IPsec.DPD} {
			if x, ok := im[key]; ok {
				s, err := p.uint(x, f+"."+key, 32)
				if err != nil {
					return t, err
				}
				*dst = time.Duration(s) * time.Second
			}
		}
	}
	if v, ok := m["path_policy"]; ok {
		if t.PathPolicy, err = p.pathPolicy(v, field+".path_policy"); err != nil {
			return t, err
		}
	}
	if v, ok := m["transit_prefixes"]; ok {
		items, err := p.seq(v, field+".transit_prefixes")
		if err != nil {
			return t, err
		}
		for i, pn := range items {
			pf := fmt.Sprintf("%s.transit_prefixes[%d]", field, i)
			raw, err := p.str(pn, pf)
			if err != nil {
				return t, err
			}
			pfx, err := intent.ParsePrefix(pf, raw)
			if err := p.domain(pn, pf, err); err != nil {
				return t, err
			}
			t.TransitPrefixes = append(t.TransitPrefixes, pfx)
		}
	}
	return t, nil
}

func (p *parser) pathPolicy(n *yaml.Node, field string) (intent.PathPolicy, error) {
	var pp intent.PathPolicy
	m, err := p.mapping(n, field, "probe_interval_ms", "down_after", "up_after", "hold_down_ms", "disabled", "sla_classes", "traffic_classes")
	if err != nil {
		return pp, err
	}
	ms := func(key string, dst *time.Duration) error {
		if x, ok := m[key]; ok {
			v, err := p.uint(x, field+"."+key, 32)
			if err != nil {
				return err
			}
			*dst = time.Duration(v) * time.Millisecond
		}
		return nil
	}
	count := func(key string, dst *int) error {
		if x, ok := m[key]; ok {
			v, err := p.uint(x, field+"."+key, 32)
			if err != nil {
				return err
			}
			*dst = int(v)
		}
		return nil
	}
	if err := errors.Join(ms("probe_interval_ms", &pp.ProbeInterval), ms("hold_down_ms", &pp.HoldDown),
		count("down_after", &pp.DownAfter), count("up_after", &pp.UpAfter)); err != nil {
		return pp, firstErr(err)
	}
	if x, ok := m["disabled"]; ok {
		if pp.Disabled, err = p.bool(x, field+".disabled"); err != nil {
			return pp, err
		}
	}
	if x, ok := m["sla_classes"]; ok {
		items, err := p.seq(x, field+".sla_classes")
		if err != nil {
			return pp, err
		}
		for i, cn := range items {
			c, err := p.slaClass(cn, fmt.Sprintf("%s.sla_classes[%d]", field, i))
			if err != nil {
				return pp, err
			}
			pp.SLAs = append(pp.SLAs, c)
		}
	}
	if x, ok := m["traffic_classes"]; ok {
		items, err := p.seq(x, field+".traffic_classes")
		if err != nil {
			return pp, err
		}
		for i, cn := range items {
			c, err := p.trafficClass(cn, fmt.Sprintf("%s.traffic_classes[%d]", field, i))
			if err != nil {
				return pp, err
			}
			pp.Classes = append(pp.Classes, c)
		}
	}
	return pp, nil
}

// firstErr returns the first error of an errors.Join.
func firstErr(err error) error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()[0]
	}
	return err
}

func (p *parser) slaClass(n *yaml.Node, field string) (intent.SLAClass, error) {
	var c intent.SLAClass
	m, err := p.mapping(n, field, "name", "max_rtt_ms", "max_loss_pct", "max_jitter_ms", "transport_preference", "damping_ms")
	if err != nil {
		return c, err
	}
	if x, ok := m["name"]; ok {
		if c.Name, err = p.str(x, field+".name"); err != nil {
			return c, err
		}
	}
	for key, dst := range map[string]*time.Duration{"max_rtt_ms": &c.MaxRTT, "max_jitter_ms": &c.MaxJitter} {
		if x, ok := m[key]; ok {
			v, err := p.float(x, field+"."+key)
			if err != nil {
				return c, err
			}
			d, err := intent.MillisDuration(field+"."+key, v)
			if err := p.domain(x, field+"."+key, err); err != nil {
				return c, err
			}
			*dst = d
		}
	}
	if x, ok := m["max_loss_pct"]; ok {
		if c.MaxLossPct, err = p.float(x, field+".max_loss_pct"); err != nil {
			return c, err
		}
	}
	if x, ok := m["transport_preference"]; ok {
		if c.Transports, err = p.strs(x, field+".transport_preference"); err != nil {
			return c, err
		}
	}
	if x, ok := m["damping_ms"]; ok {
		v, err := p.uint(x, field+".damping_ms", 32)
		if err != nil {
			return c, err
		}
		c.Damping = time.Duration(v) * time.Millisecond
	}
	return c, nil
}

func (p *parser) trafficClass(n *yaml.Node, field string) (intent.TrafficClass, error) {
	var c intent.TrafficClass
	m, err := p.mapping(n, field, "name", "sla_class", "dscp", "protocol", "ports", "destinations")
	if err != nil {
		return c, err
	}
	for key, dst := range map[string]*string{"name": &c.Name, "sla_class": &c.SLA, "protocol": &c.Protocol} {
		if x, ok := m[key]; ok {
			if *dst, err = p.str(x, field+"."+key); err != nil {
				return c, err
			}
		}
	}
	if x, ok := m["dscp"]; ok {
		items, err := p.seq(x, field+".dscp")
		if err != nil {
			return c, err
		}
		for i, dn := range items {
			f := fmt.Sprintf("%s.dscp[%d]", field, i)
			v, err := p.uint(dn, f, 32)
			if err != nil {
				return c, err
			}
			d, err := intent.ParseDSCP(f, uint32(v))
			if err := p.domain(dn, f, err); err != nil {
				return c, err
			}
			c.DSCP = append(c.DSCP, d)
		}
	}
	for key, each := range map[string]func(f, s string) error{
		"ports": func(f, s string) error {
			r, err := intent.ParsePortRange(f, s)
			c.Ports = append(c.Ports, r)
			return err
		},
		"destinations": func(f, s string) error {
			d, err := intent.ParseDestination(f, s)
			c.Destinations = append(c.Destinations, d)
			return err
		},
	} {
		x, ok := m[key]
		if !ok {
			continue
		}
		items, err := p.seq(x, field+"."+key)
		if err != nil {
			return c, err
		}
		for i, in := range items {
			f := fmt.Sprintf("%s.%s[%d]", field, key, i)
			s, err := p.str(in, f)
			if err != nil {
				return c, err
			}
			if err := p.domain(in, f, each(f, s)); err != nil {
				return c, err
			}
		}
	}
	return c, nil
}

// validate runs intent's whole-site, cross-site and topology checks and
// places their errors at the field they name.
func (p *parser) validate() error {
	f := p.f
	for i, s := range f.Sites {
		if err := s.Validate(); err != nil {
			return p.located(fmt.Sprintf("sites[%d]", i), s.Name, err)
		}
	}
	idx := intent.NewIndex(f.Sites, nil)
	for i, s := range f.Sites {
		if err := idx.CheckEarlier(i, netip.Prefix{}); err != nil {
			return p.located(fmt.Sprintf("sites[%d]", i), s.Name, err)
		}
		if j := slices.IndexFunc(f.Sites[:i], func(o intent.Site) bool { return o.Name == s.Name }); j >= 0 {
			return p.located(fmt.Sprintf("sites[%d]", i), s.Name, fmt.Errorf("site.name: %q is also the name of sites[%d]", s.Name, j))
		}
	}
	// The controller decides whether the network has a hub: with prune
	// off, a hub the file does not declare may still count.
	if err := f.Topology.Validate(f.Sites); err != nil && !errors.Is(err, intent.ErrPrecondition) {
		return p.located("", "", err)
	}
	return nil
}

// located turns an intent error naming "site.X" (for the site at path)
// or "topology.X" into an Error at that field.
func (p *parser) located(sitePath, name string, err error) error {
	msg := strings.TrimPrefix(err.Error(), intent.ErrInvalid.Error()+": ")
	msg = strings.TrimPrefix(msg, intent.ErrConflict.Error()+": ")
	field := sitePath
	if m := fieldRE.FindStringSubmatch(msg); m != nil {
		if rest, ok := strings.CutPrefix(m[1], "site."); ok && sitePath != "" {
			field = sitePath + "." + rest
		} else if strings.HasPrefix(m[1], "topology") {
			field = m[1]
		}
		msg = strings.TrimPrefix(msg, m[1]+": ")
	}
	pos, _ := p.f.Pos(field)
	if name != "" {
		msg = fmt.Sprintf("site %q: %s", name, msg)
	}
	return &Error{File: p.f.Name, Pos: pos, Field: field, Msg: msg}
}
