package scenario

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"blastradius.dev/blastradius/internal/oneline"
)

// Scenario files: one YAML document per file, the format documented in
// docs/scenarios.md. The document is walked as a yaml.Node tree rather than
// decoded into structs so that every error can name the file, line, column
// and field path in one line, in words a scenario author understands
// instead of Go type names.

// maxFileSize bounds a scenario file. Real ones are a few hundred bytes; a
// path mistyped onto a log or a binary should fail at once, not parse.
const maxFileSize = 1 << 20

// Limits of the format. They keep a typo (nodes: 200) from becoming a run
// that cannot fit on the machine, not a statement about the harness.
const (
	maxNodes            = 20
	maxWorkloadsPerNode = 50
	maxWaypointReplicas = 5
	maxTrials           = 100
	maxBudget           = 100000 // rps, the same bound as --budget
	minDuration         = time.Second
	maxDuration         = 10 * time.Minute
	minCertTTL          = time.Second
	maxNameLen          = 63 // the name becomes part of a results folder name
)

var nameRE = regexp.MustCompile(`^[a-z0-9-]+$`)

// LoadFile reads a scenario file; see ParseFile.
func LoadFile(path string) (Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		// The path is already the prefix of the message.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return Scenario{}, fmt.Errorf("%s: %v", path, err)
	}
	return ParseFile(path, data)
}

// ParseFile decodes and checks a scenario file's contents; name is the
// file's path, used in errors and kept in Scenario.File. Every error is one
// line: "name:line:column: field.path: problem". Beyond the format, it lays
// the scenario out (makePlan) so that an impossible topology fails here,
// not after a cluster has been brought up.
func ParseFile(name string, data []byte) (Scenario, error) {
	d := &fileDecoder{file: name, keys: map[string]*yaml.Node{}, vals: map[string]*yaml.Node{}}
	sc, err := d.decode(data)
	if err != nil {
		return Scenario{}, err
	}
	return sc, nil
}

type fileDecoder struct {
	file string
	root *yaml.Node
	// keys and vals hold the key and value node of every field seen, by
	// field path ("fault.node"), for errors found after decoding.
	keys, vals map[string]*yaml.Node
}

// errorf formats an error at node n (nil: no position) for a field path.
func (d *fileDecoder) errorf(n *yaml.Node, path, format string, args ...any) error {
	var b strings.Builder
	b.WriteString(d.file)
	if n != nil && n.Line > 0 {
		fmt.Fprintf(&b, ":%d", n.Line)
		if n.Column > 0 {
			fmt.Fprintf(&b, ":%d", n.Column)
		}
	}
	b.WriteString(": ")
	if path != "" {
		b.WriteString(path + ": ")
	}
	b.WriteString(fmt.Sprintf(format, args...))
	return errors.New(oneline.Escape(b.String()))
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError rewrites a YAML parser error into the file's error format.
func (d *fileDecoder) syntaxError(err error) error {
	msg := oneline.Escape(err.Error())
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("%s:%s: syntax error: %s", d.file, m[1], m[2])
	}
	return fmt.Errorf("%s: syntax error: %s", d.file, strings.TrimPrefix(msg, "yaml: "))
}

func (d *fileDecoder) decode(data []byte) (Scenario, error) {
	if len(data) > maxFileSize {
		return Scenario{}, d.errorf(nil, "", "%d bytes is too large for a scenario file (at most %d)", len(data), maxFileSize)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return Scenario{}, d.errorf(nil, "", "empty file (a scenario needs at least name, topology and load)")
		}
		return Scenario{}, d.syntaxError(err)
	}
	// Several documents in one file would be several scenarios, or a
	// stray "---" hiding the rest of the file: either way not what the
	// author meant by one scenario.
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return Scenario{}, d.syntaxError(err)
	default:
		at := &next
		if len(next.Content) > 0 && next.Content[0].Line > 0 {
			at = next.Content[0]
		}
		return Scenario{}, d.errorf(at, "", "a second YAML document: a scenario file holds exactly one (remove the \"---\")")
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return Scenario{}, d.errorf(nil, "", "empty file (a scenario needs at least name, topology and load)")
		}
		root = root.Content[0]
	}
	root = resolve(root)
	if isNull(root) {
		return Scenario{}, d.errorf(root, "", "empty document (a scenario needs at least name, topology and load)")
	}
	d.root = root
	return d.scenario(root)
}

// resolve follows an alias to the node it names, keeping the alias's own
// position so that errors point where the value is used. Aliases are not
// expanded any further: the walk below is bounded by the format's own
// depth, so neither alias cycles nor alias bombs can make it loop or blow
// up.
func resolve(n *yaml.Node) *yaml.Node {
	if n == nil || n.Kind != yaml.AliasNode {
		return n
	}
	r := n
	for range 8 {
		if r.Kind != yaml.AliasNode || r.Alias == nil {
			break
		}
		r = r.Alias
	}
	if r.Kind == yaml.AliasNode {
		return n
	}
	c := *r
	c.Line, c.Column = n.Line, n.Column
	return &c
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// describe names what a node holds, for "want X, got Y" messages.
func describe(n *yaml.Node) string {
	n = resolve(n)
	switch {
	case isNull(n):
		return "nothing"
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Kind == yaml.AliasNode:
		return "an alias"
	}
	return quote(n.Value)
}

// quote quotes a value from the file for a message, cut short when long.
func quote(s string) string {
	const max = 40
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "..."
	}
	return strconv.Quote(s)
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// mapping is one decoded YAML mapping of the format.
type mapping struct {
	path string
	at   *yaml.Node // where a missing field is reported: the mapping's key
	keys map[string]*yaml.Node
	vals map[string]*yaml.Node
}

func (m *mapping) has(f string) bool { return m.vals[f] != nil }

// mapping checks that n is a mapping whose keys are all known, once each.
// A null (a key with nothing after it) is an empty mapping.
func (d *fileDecoder) mapping(n, at *yaml.Node, path string, known ...string) (*mapping, error) {
	m := &mapping{path: path, at: at, keys: map[string]*yaml.Node{}, vals: map[string]*yaml.Node{}}
	n = resolve(n)
	if isNull(n) {
		return m, nil
	}
	if n.Kind != yaml.MappingNode {
		what := "the scenario's fields"
		if path != "" {
			what = "fields " + strings.Join(known, ", ")
		}
		return nil, d.errorf(n, path, "want a mapping of %s, got %s", what, describe(n))
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode || isNull(k) {
			return nil, d.errorf(k, path, "a field name must be plain text, got %s", describe(k))
		}
		f := join(path, k.Value)
		if !slices.Contains(known, k.Value) {
			return nil, d.errorf(k, f, "unknown field (%s)", suggest(k.Value, known))
		}
		if prev := m.keys[k.Value]; prev != nil {
			return nil, d.errorf(k, f, "given twice (first on line %d)", prev.Line)
		}
		m.keys[k.Value], m.vals[k.Value] = k, v
		d.keys[f], d.vals[f] = k, v
	}
	return m, nil
}

// suggest lists the known fields, leading with the one meant when the
// difference is only case or separators (recover_after, workloadspernode).
func suggest(got string, known []string) string {
	norm := func(s string) string {
		return strings.ToLower(strings.NewReplacer("_", "", "-", "").Replace(s))
	}
	for _, k := range known {
		if norm(k) == norm(got) {
			return "did you mean " + k + "?"
		}
	}
	return "known: " + strings.Join(known, ", ")
}

// required returns a field's value or an error at the mapping's key.
func (d *fileDecoder) required(m *mapping, f string) (*yaml.Node, error) {
	if !m.has(f) {
		at := m.at
		if at == nil {
			at = d.root
		}
		return nil, d.errorf(at, join(m.path, f), "required")
	}
	return m.vals[f], nil
}

func (d *fileDecoder) scalar(n *yaml.Node, path, want string) (*yaml.Node, error) {
	n = resolve(n)
	if n == nil || n.Kind != yaml.ScalarNode || isNull(n) {
		return nil, d.errorf(n, path, "want %s, got %s", want, describe(n))
	}
	return n, nil
}

func (d *fileDecoder) text(n *yaml.Node, path string) (string, error) {
	s, err := d.scalar(n, path, "text")
	if err != nil {
		return "", err
	}
	return s.Value, nil
}

// integer reads a whole number in [lo, hi]. A quoted number is text, as
// YAML has it, and is refused rather than guessed at.
func (d *fileDecoder) integer(n *yaml.Node, path string, lo, hi int) (int, error) {
	s, err := d.scalar(n, path, "a whole number")
	if err != nil {
		return 0, err
	}
	var v int
	if s.ShortTag() != "!!int" || s.Decode(&v) != nil {
		return 0, d.errorf(s, path, "want a whole number, got %s", describe(s))
	}
	if v < lo || v > hi {
		return 0, d.errorf(s, path, "%d is out of range %d..%d", v, lo, hi)
	}
	return v, nil
}

// rate reads a requests-per-second number in (0, max].
func (d *fileDecoder) rate(n *yaml.Node, path string, max float64) (float64, error) {
	s, err := d.scalar(n, path, "a number")
	if err != nil {
		return 0, err
	}
	var v float64
	if (s.ShortTag() != "!!int" && s.ShortTag() != "!!float") || s.Decode(&v) != nil {
		return 0, d.errorf(s, path, "want a number, got %s", describe(s))
	}
	// Written so that NaN fails too.
	if !(v > 0 && v <= max) {
		return 0, d.errorf(s, path, "%s is out of range (0, %g]", s.Value, max)
	}
	return v, nil
}

// duration reads a Go duration ("3s", "500ms") no shorter than lo and, when
// hi > 0, no longer than hi.
func (d *fileDecoder) duration(n *yaml.Node, path string, lo, hi time.Duration) (time.Duration, error) {
	s, err := d.scalar(n, path, `a duration like "3s" or "500ms"`)
	if err != nil {
		return 0, err
	}
	v, perr := time.ParseDuration(s.Value)
	if perr != nil {
		return 0, d.errorf(s, path, `%s is not a duration (want e.g. "3s" or "500ms")`, quote(s.Value))
	}
	if v < 0 && lo == 0 {
		return 0, d.errorf(s, path, "%s is negative", v)
	}
	if v < lo || (hi > 0 && v > hi) {
		if hi > 0 {
			return 0, d.errorf(s, path, "%s is out of range %s..%s", v, lo, hi)
		}
		return 0, d.errorf(s, path, "%s is too short (at least %s)", v, lo)
	}
	return v, nil
}

func (d *fileDecoder) list(n *yaml.Node, path string) ([]*yaml.Node, error) {
	n = resolve(n)
	if n == nil || n.Kind != yaml.SequenceNode {
		return nil, d.errorf(n, path, "want a list, got %s", describe(n))
	}
	if len(n.Content) == 0 {
		return nil, d.errorf(n, path, "empty list (leave the field out instead)")
	}
	return n.Content, nil
}

func item(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// nodeIndex parses "node-<i>" with i in 1..nodes; 0 if it is not a node.
func nodeIndex(s string, nodes int) int {
	i, err := strconv.Atoi(strings.TrimPrefix(s, "node-"))
	if err != nil || nodeName(i) != s || i < 1 || i > nodes {
		return 0
	}
	return i
}

func (d *fileDecoder) scenario(root *yaml.Node) (Scenario, error) {
	sc := Scenario{File: d.file}
	top, err := d.mapping(root, nil, "", "name", "description", "topology", "modes", "mesh", "flows", "load", "fault", "trials", "expect")
	if err != nil {
		return sc, err
	}

	n, err := d.required(top, "name")
	if err != nil {
		return sc, err
	}
	if sc.Name, err = d.text(n, "name"); err != nil {
		return sc, err
	}
	if !nameRE.MatchString(sc.Name) || len(sc.Name) > maxNameLen {
		return sc, d.errorf(resolve(n), "name", "%s: want lower-case letters, digits and dashes, at most %d characters", quote(sc.Name), maxNameLen)
	}
	if top.has("description") {
		s, err := d.text(top.vals["description"], "description")
		if err != nil {
			return sc, err
		}
		// A block scalar (description: >) ends in a newline.
		sc.Description = strings.TrimSpace(s)
	}

	n, err = d.required(top, "topology")
	if err != nil {
		return sc, err
	}
	if err := d.topology(&sc, n, top.keys["topology"]); err != nil {
		return sc, err
	}
	if top.has("modes") {
		if err := d.modes(&sc, top.vals["modes"]); err != nil {
			return sc, err
		}
	}
	if top.has("mesh") {
		if err := d.mesh(&sc, top.vals["mesh"], top.keys["mesh"]); err != nil {
			return sc, err
		}
	}
	if top.has("flows") {
		if err := d.flows(&sc, top.vals["flows"], top.keys["flows"]); err != nil {
			return sc, err
		}
	} else {
		sc.Profiles = DefaultFlows()
	}
	n, err = d.required(top, "load")
	if err != nil {
		return sc, err
	}
	if err := d.load(&sc, n, top.keys["load"]); err != nil {
		return sc, err
	}
	if top.has("fault") {
		if err := d.fault(&sc, top.vals["fault"], top.keys["fault"]); err != nil {
			return sc, err
		}
	}
	if top.has("trials") {
		if sc.Trials, err = d.integer(top.vals["trials"], "trials", 1, maxTrials); err != nil {
			return sc, err
		}
	}
	if top.has("expect") {
		items, err := d.list(top.vals["expect"], "expect")
		if err != nil {
			return sc, err
		}
		for i, it := range items {
			s, err := d.text(it, item("expect", i))
			if err != nil {
				return sc, err
			}
			e, perr := ParseExpect(s)
			if perr != nil {
				return sc, d.errorf(resolve(it), item("expect", i), "%v", perr)
			}
			if why := expectNeeds(e, sc.Fault); why != "" {
				return sc, d.errorf(resolve(it), item("expect", i), "%s %s", e.Name, why)
			}
			sc.Expect = append(sc.Expect, e)
		}
	}
	if err := d.crossChecks(&sc); err != nil {
		return sc, err
	}
	return sc, d.planChecks(sc)
}

func (d *fileDecoder) topology(sc *Scenario, n, at *yaml.Node) error {
	m, err := d.mapping(n, at, "topology", "nodes", "workloadsPerNode")
	if err != nil {
		return err
	}
	v, err := d.required(m, "nodes")
	if err != nil {
		return err
	}
	if sc.Nodes, err = d.integer(v, "topology.nodes", 1, maxNodes); err != nil {
		return err
	}
	// Absent stays 0, which the plan reads as the default of 1, as in the
	// built-in catalogue.
	if m.has("workloadsPerNode") {
		if sc.WorkloadsPerNode, err = d.integer(m.vals["workloadsPerNode"], "topology.workloadsPerNode", 1, maxWorkloadsPerNode); err != nil {
			return err
		}
	}
	return nil
}

func (d *fileDecoder) modes(sc *Scenario, n *yaml.Node) error {
	items, err := d.list(n, "modes")
	if err != nil {
		return err
	}
	for i, it := range items {
		p := item("modes", i)
		s, err := d.text(it, p)
		if err != nil {
			return err
		}
		if !contains(AllModes, s) {
			return d.errorf(resolve(it), p, "unknown mode %s (known: %s)", quote(s), strings.Join(AllModes, ", "))
		}
		if contains(sc.Mesh.Modes, s) {
			return d.errorf(resolve(it), p, "mode %s listed twice", s)
		}
		sc.Mesh.Modes = append(sc.Mesh.Modes, s)
	}
	return nil
}

func (d *fileDecoder) mesh(sc *Scenario, n, at *yaml.Node) error {
	m, err := d.mapping(n, at, "mesh", "certTTL", "drain", "handoff", "waypoint")
	if err != nil {
		return err
	}
	if m.has("certTTL") {
		if sc.Mesh.CertTTL, err = d.duration(m.vals["certTTL"], "mesh.certTTL", minCertTTL, 0); err != nil {
			return err
		}
	}
	if m.has("drain") {
		// Zero would mean "the default" to the data plane: a file that
		// names a drain gets the one it names.
		if sc.Mesh.Drain, err = d.duration(m.vals["drain"], "mesh.drain", time.Millisecond, maxDuration); err != nil {
			return err
		}
	}
	if m.has("handoff") {
		if sc.Mesh.Handoff, err = d.text(m.vals["handoff"], "mesh.handoff"); err != nil {
			return err
		}
		if !contains(HandoffKinds, sc.Mesh.Handoff) {
			return d.errorf(resolve(m.vals["handoff"]), "mesh.handoff", "unknown handoff strategy %s (known: %s)", quote(sc.Mesh.Handoff), strings.Join(HandoffKinds, ", "))
		}
	}
	if !m.has("waypoint") {
		return nil
	}
	w, err := d.mapping(m.vals["waypoint"], m.keys["waypoint"], "mesh.waypoint", "service", "replicas")
	if err != nil {
		return err
	}
	v, err := d.required(w, "service")
	if err != nil {
		return err
	}
	svc, err := d.text(v, "mesh.waypoint.service")
	if err != nil {
		return err
	}
	i, aerr := strconv.Atoi(strings.TrimPrefix(svc, "echo-n"))
	if aerr != nil || fmt.Sprintf("echo-n%d", i) != svc || i < 1 || i > sc.Nodes {
		return d.errorf(resolve(v), "mesh.waypoint.service", "%s is not a service of the topology (echo-n1..echo-n%d)", quote(svc), sc.Nodes)
	}
	wp := &Waypoint{Service: svc, Replicas: 1}
	if w.has("replicas") {
		if wp.Replicas, err = d.integer(w.vals["replicas"], "mesh.waypoint.replicas", 1, maxWaypointReplicas); err != nil {
			return err
		}
	}
	sc.Mesh.Waypoint = wp
	return nil
}

// flowKind reads "via/profile" or the via and profile fields of a custom flow.
func (d *fileDecoder) flowKind(via, profile string, viaNode, profileNode *yaml.Node, viaPath, profilePath string) (FlowKind, error) {
	if via != "svc" && via != "pod" {
		return FlowKind{}, d.errorf(viaNode, viaPath, "unknown via %s (known: svc, pod)", quote(via))
	}
	if !contains(Profiles, profile) {
		return FlowKind{}, d.errorf(profileNode, profilePath, "unknown profile %s (known: %s)", quote(profile), strings.Join(Profiles, ", "))
	}
	return FlowKind{Via: via, Profile: profile}, nil
}

func (d *fileDecoder) flows(sc *Scenario, n, at *yaml.Node) error {
	m, err := d.mapping(n, at, "flows", "matrix", "custom")
	if err != nil {
		return err
	}
	switch {
	case m.has("matrix") && m.has("custom"):
		return d.errorf(m.keys["custom"], "flows.custom", "give matrix or custom, not both (custom replaces the matrix)")
	case !m.has("matrix") && !m.has("custom"):
		return d.errorf(at, "flows", "give matrix or custom (leave flows out for the default matrix)")
	}
	if m.has("matrix") {
		items, err := d.list(m.vals["matrix"], "flows.matrix")
		if err != nil {
			return err
		}
		for i, it := range items {
			p := item("flows.matrix", i)
			s, err := d.text(it, p)
			if err != nil {
				return err
			}
			via, profile, ok := strings.Cut(s, "/")
			if !ok {
				return d.errorf(resolve(it), p, "%s: want via/profile, e.g. pod/%s", quote(s), ProfileNewConn)
			}
			k, err := d.flowKind(via, profile, resolve(it), resolve(it), p, p)
			if err != nil {
				return err
			}
			if slices.Contains(sc.Profiles, k) {
				return d.errorf(resolve(it), p, "%s listed twice", s)
			}
			sc.Profiles = append(sc.Profiles, k)
		}
		return nil
	}
	items, err := d.list(m.vals["custom"], "flows.custom")
	if err != nil {
		return err
	}
	seen := map[string]int{}
	for i, it := range items {
		p := item("flows.custom", i)
		cm, err := d.mapping(it, resolve(it), p, "from", "to", "via", "profile", "qps")
		if err != nil {
			return err
		}
		var cf CustomFlow
		for _, end := range []struct {
			field string
			into  *int
		}{{"from", &cf.ClientNode}, {"to", &cf.ServerNode}} {
			v, err := d.required(cm, end.field)
			if err != nil {
				return err
			}
			// Checked against the topology here, with the node's own
			// line, rather than left to the plan.
			fp := join(p, end.field)
			if *end.into, err = d.integer(v, fp, math.MinInt, math.MaxInt); err != nil {
				return err
			}
			if *end.into < 1 || *end.into > sc.Nodes {
				return d.errorf(resolve(v), fp, "impossible topology: node %d is not in it (nodes 1..%d)", *end.into, sc.Nodes)
			}
		}
		vn, err := d.required(cm, "via")
		if err != nil {
			return err
		}
		via, err := d.text(vn, join(p, "via"))
		if err != nil {
			return err
		}
		pn, err := d.required(cm, "profile")
		if err != nil {
			return err
		}
		profile, err := d.text(pn, join(p, "profile"))
		if err != nil {
			return err
		}
		if cf.Kind, err = d.flowKind(via, profile, resolve(vn), resolve(pn), join(p, "via"), join(p, "profile")); err != nil {
			return err
		}
		if cm.has("qps") {
			if cf.QPS, err = d.rate(cm.vals["qps"], join(p, "qps"), maxBudget); err != nil {
				return err
			}
		}
		// Two identical flows would share one flow ID in the results.
		id := fmt.Sprintf("n%d-to-n%d.%s.%s", cf.ClientNode, cf.ServerNode, cf.Kind.Via, cf.Kind.Profile)
		if j, dup := seen[id]; dup {
			return d.errorf(resolve(it), p, "the same flow as flows.custom[%d] (%s)", j, id)
		}
		seen[id] = i
		sc.Custom = append(sc.Custom, cf)
	}
	return nil
}

func (d *fileDecoder) load(sc *Scenario, n, at *yaml.Node) error {
	m, err := d.mapping(n, at, "load", "duration", "budget")
	if err != nil {
		return err
	}
	v, err := d.required(m, "duration")
	if err != nil {
		return err
	}
	if sc.Duration, err = d.duration(v, "load.duration", minDuration, maxDuration); err != nil {
		return err
	}
	if m.has("budget") {
		if sc.Budget, err = d.rate(m.vals["budget"], "load.budget", maxBudget); err != nil {
			return err
		}
	}
	return nil
}

// faultOptional are the fault fields only some kinds read.
var faultOptional = []string{"node", "peer", "pod", "recoverAfter", "then", "flow", "holes", "gap", "drop"}

func (d *fileDecoder) fault(sc *Scenario, n, at *yaml.Node) error {
	m, err := d.mapping(n, at, "fault", append([]string{"kind", "at"}, faultOptional...)...)
	if err != nil {
		return err
	}
	f := &sc.Fault
	v, err := d.required(m, "kind")
	if err != nil {
		return err
	}
	if f.Kind, err = d.text(v, "fault.kind"); err != nil {
		return err
	}
	k, lerr := LookupFault(f.Kind)
	if lerr != nil {
		return d.errorf(resolve(v), "fault.kind", "unknown fault %s (known: %s)", quote(f.Kind), strings.Join(FaultNames(), ", "))
	}
	// Fields the kind does not read are refused before their values are
	// looked at: "holes on a node crash" is the mistake to report.
	for _, field := range faultOptional {
		if m.has(field) && !reads(k, field) {
			return d.errorf(m.keys[field], join("fault", field), "%s does not use %s (%s)", k.Name, field, usedBy(field))
		}
	}
	v, err = d.required(m, "at")
	if err != nil {
		return err
	}
	if f.At, err = d.duration(v, "fault.at", 0, 0); err != nil {
		return err
	}
	if f.At >= sc.Duration {
		return d.errorf(resolve(v), "fault.at", "%s is not before the end of load (load.duration %s)", f.At, sc.Duration)
	}
	target := sc.Nodes // the default target, the last node
	if m.has("node") {
		s, err := d.text(m.vals["node"], "fault.node")
		if err != nil {
			return err
		}
		if target = nodeIndex(s, sc.Nodes); target == 0 {
			return d.errorf(resolve(m.vals["node"]), "fault.node", "%s is not a node (the topology has node-1..node-%d)", quote(s), sc.Nodes)
		}
		f.Node = s
	}
	if m.has("peer") {
		s, err := d.text(m.vals["peer"], "fault.peer")
		if err != nil {
			return err
		}
		if i := nodeIndex(s, sc.Nodes); i == 0 {
			return d.errorf(resolve(m.vals["peer"]), "fault.peer", "%s is not a node (the topology has node-1..node-%d)", quote(s), sc.Nodes)
		} else if i == target {
			return d.errorf(resolve(m.vals["peer"]), "fault.peer", "%s is the fault's own node: a partition needs two sides", s)
		}
		f.Peer = s
	}
	if m.has("pod") {
		if m.has("node") {
			return d.errorf(m.keys["pod"], "fault.pod", "give node or pod, not both (the pod decides the node)")
		}
		if f.Pod, err = d.text(m.vals["pod"], "fault.pod"); err != nil {
			return err
		}
	}
	if m.has("recoverAfter") {
		v := m.vals["recoverAfter"]
		if f.RecoverAfter, err = d.duration(v, "fault.recoverAfter", time.Millisecond, 0); err != nil {
			return err
		}
		// A recovery after load ends is never observed: almost surely a
		// typo for a shorter one.
		if f.At+f.RecoverAfter >= sc.Duration {
			return d.errorf(resolve(v), "fault.recoverAfter", "recovery at %s is not before the end of load (load.duration %s); leave recoverAfter out for no recovery",
				f.At+f.RecoverAfter, sc.Duration)
		}
	}
	if m.has("then") {
		v := m.vals["then"]
		if f.Then, err = d.duration(v, "fault.then", time.Millisecond, 0); err != nil {
			return err
		}
		if f.At+f.Then >= sc.Duration {
			return d.errorf(resolve(v), "fault.then", "the second step at %s is not before the end of load (load.duration %s)", f.At+f.Then, sc.Duration)
		}
		// The crash must fall inside the outage it is about.
		if k.Name == FaultNodeProxyCrashCPDown && f.RecoverAfter > 0 && f.Then >= f.RecoverAfter {
			return d.errorf(resolve(v), "fault.then", "the node proxy crash (%s) must come before the control plane returns (recoverAfter %s)", f.Then, f.RecoverAfter)
		}
	}
	if m.has("flow") {
		if f.Flow, err = d.text(m.vals["flow"], "fault.flow"); err != nil {
			return err
		}
	}
	if m.has("gap") {
		if f.Gap, err = d.duration(m.vals["gap"], "fault.gap", 0, 0); err != nil {
			return err
		}
	}
	if m.has("drop") {
		if f.Drop, err = d.text(m.vals["drop"], "fault.drop"); err != nil {
			return err
		}
		if !contains(DropKinds, f.Drop) {
			return d.errorf(resolve(m.vals["drop"]), "fault.drop", "unknown drop %s (known: %s)", quote(f.Drop), strings.Join(DropKinds, ", "))
		}
	}
	if k.Name == FaultBlackHole {
		v, err := d.required(m, "holes")
		if err != nil {
			return err
		}
		items, err := d.list(v, "fault.holes")
		if err != nil {
			return err
		}
		end := f.At
		for i, it := range items {
			h, err := d.duration(it, item("fault.holes", i), time.Millisecond, maxDuration)
			if err != nil {
				return err
			}
			if i > 0 {
				end += f.Gap
			}
			end += h
			f.Holes = append(f.Holes, h)
		}
		if end >= sc.Duration {
			return d.errorf(resolve(v), "fault.holes", "the last hole ends at %s, not before the end of load (load.duration %s)", end, sc.Duration)
		}
	}
	return nil
}

// expectNeeds says what fault an expectation needs that the scenario's
// fault is not, or "": without it the check can only fail (no verdict
// without a fault) or would measure against a target that does not exist.
func expectNeeds(e Expect, f Fault) string {
	switch e.Name {
	case ExpectContained, ExpectVerdict:
		if f.Kind == "" {
			return "needs a fault: without one there is no verdict"
		}
	case ExpectGracefulHandoff:
		if f.Kind != FaultNodeProxyRestart && f.Kind != FaultNodeProxyRolling {
			return "needs a " + FaultNodeProxyRestart + " or " + FaultNodeProxyRolling + " fault: it checks their handoffs"
		}
	case ExpectNodeRadius, ExpectProxyRadius:
		if k, err := LookupFault(f.Kind); err != nil || !k.Target {
			return "needs a fault aimed at a node (one that takes fault.node)"
		}
	case ExpectPrecision:
		if f.Kind != FaultBlackHole {
			return "needs a " + FaultBlackHole + " fault: it measures the holes"
		}
	}
	return ""
}

// reads says whether a fault kind reads an optional fault field.
func reads(k *FaultKind, field string) bool {
	if field == "node" {
		return k.Target
	}
	return slices.Contains(k.Fields, field)
}

// usedBy names the fault kinds that read a field.
func usedBy(field string) string {
	var kinds []string
	for _, name := range FaultNames() {
		if k, _ := LookupFault(name); reads(k, field) {
			kinds = append(kinds, name)
		}
	}
	if len(kinds) == 0 {
		return "no fault does"
	}
	if len(kinds) == 1 {
		return "only " + kinds[0] + " does"
	}
	return "only " + strings.Join(kinds, ", ") + " do"
}

// crossChecks are the checks between sections of the file.
func (d *fileDecoder) crossChecks(sc *Scenario) error {
	modes := sc.Mesh.Modes
	if sc.Mesh.Waypoint != nil && len(modes) > 0 && !contains(modes, "ambient") {
		return d.errorf(d.keys["mesh.waypoint"], "mesh.waypoint", "waypoints exist only in ambient mode, which modes leaves out")
	}
	if sc.Fault.Kind == "" {
		return nil
	}
	k, _ := LookupFault(sc.Fault.Kind)
	if k.Modes != nil && len(modes) > 0 && !slices.ContainsFunc(modes, func(m string) bool { return contains(k.Modes, m) }) {
		return d.errorf(d.keys["modes"], "modes", "fault %s runs only in %s (%s): the scenario could never run",
			k.Name, strings.Join(k.Modes, " or "), k.ModeReason)
	}
	if k.NeedsWaypoint && sc.Mesh.Waypoint == nil {
		return d.errorf(d.keys["fault.kind"], "fault.kind", "%s needs a waypoint: give mesh.waypoint", k.Name)
	}
	return nil
}

// planChecks lays the scenario out as a trial would, so that what only the
// layout knows (an impossible topology, a fault aimed at a flow or pod that
// is not there) fails now with a line number, not after bring-up.
func (d *fileDecoder) planChecks(sc Scenario) error {
	// The rate does not change the layout; any positive budget will do.
	budget := sc.Budget
	if budget <= 0 {
		budget = 1
	}
	p, err := makePlan(sc, budget)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "scenario "+sc.Name+": ")
		at, path := d.keys["topology"], "topology"
		switch {
		case sc.Mesh.Waypoint != nil && strings.Contains(msg, "waypoint"):
			at, path = d.keys["mesh.waypoint"], "mesh.waypoint"
		case sc.Fault.Kind != "" && (strings.Contains(msg, "fault") || strings.Contains(msg, "partition") || strings.Contains(msg, "drain")):
			at, path = d.keys["fault"], "fault"
		}
		return d.errorf(at, path, "impossible topology: %s", msg)
	}
	f := sc.Fault
	if f.Kind == FaultSidecarCrash && f.Pod != "" && !slices.ContainsFunc(p.Pods, func(pp plannedPod) bool { return pp.Name == f.Pod }) {
		var names []string
		for _, pp := range p.Pods {
			names = append(names, pp.Name)
		}
		return d.errorf(resolve(d.vals["fault.pod"]), "fault.pod", "no pod %s in this scenario (pods: %s)", quote(f.Pod), fmtList(names, 8))
	}
	if f.Kind == FaultBlackHole && f.Flow != "" {
		var ids []string
		found := false
		for _, pf := range p.Flows {
			if pf.Control {
				continue
			}
			ids = append(ids, pf.ID)
			found = found || pf.ID == f.Flow
		}
		if !found {
			return d.errorf(resolve(d.vals["fault.flow"]), "fault.flow", "no flow %s in this scenario (flows: %s)", quote(f.Flow), fmtList(ids, 6))
		}
	}
	return nil
}
