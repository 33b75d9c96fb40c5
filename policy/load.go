package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Error is one problem found in a policy document, with the position of the
// YAML node it concerns.
type Error struct {
	Line, Column int // 1-based; 0 when unknown
	Message      string
}

func (e *Error) Error() string {
	if e.Line == 0 {
		return "policy: " + e.Message
	}
	return fmt.Sprintf("policy: line %d: %s", e.Line, e.Message)
}

// Parse reads a YAML document whose top level is the policy section
// (`tables: [...]`).
func Parse(data []byte) (*Policy, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return &Policy{byName: map[string]*Table{}}, nil
	}
	return Load(doc.Content[0])
}

// Load builds and validates a policy from the `policy:` section node of the
// configuration. A nil or empty node yields an empty policy. All problems
// found are returned together (errors.Join of *Error), each with its line.
func Load(node *yaml.Node) (*Policy, error) {
	l := &loader{lines: map[*Column]*yaml.Node{}, adLine: map[*Column]*yaml.Node{}, accessNodes: map[*Column]*yaml.Node{}}
	p := l.policy(node)
	if len(l.errs) > 0 {
		return nil, errors.Join(l.errs...)
	}
	return p, nil
}

type loader struct {
	errs        []error
	lines       map[*Column]*yaml.Node // the column's key node
	adLine      map[*Column]*yaml.Node // its associated_data node, if set
	accessNodes map[*Column]*yaml.Node // its access node, if set (access.go)
}

func (l *loader) errorf(n *yaml.Node, format string, args ...any) {
	e := &Error{Message: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	l.errs = append(l.errs, e)
}

// fields checks that n is a mapping whose keys are all in allowed and unique,
// and returns key -> (key node, value node).
func (l *loader) fields(n *yaml.Node, what string, allowed ...string) map[string][2]*yaml.Node {
	n = resolveAlias(n)
	if n.Kind != yaml.MappingNode {
		l.errorf(n, "%s must be a mapping", what)
		return nil
	}
	m := make(map[string][2]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolveAlias(n.Content[i+1])
		if !slices.Contains(allowed, k.Value) {
			l.errorf(k, "unknown field %q in %s (allowed: %s)", k.Value, what, strings.Join(allowed, ", "))
			continue
		}
		if _, dup := m[k.Value]; dup {
			l.errorf(k, "duplicate field %q in %s", k.Value, what)
			continue
		}
		m[k.Value] = [2]*yaml.Node{k, v}
	}
	return m
}

// boolean reads a YAML boolean (true or false).
func (l *loader) boolean(n *yaml.Node, what string) bool {
	var b bool
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || n.Decode(&b) != nil {
		l.errorf(n, "%s must be true or false", what)
		return false
	}
	return b
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func (l *loader) scalar(n *yaml.Node, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		l.errorf(n, "%s must be a scalar", what)
		return "", false
	}
	return n.Value, true
}

func (l *loader) policy(node *yaml.Node) *Policy {
	p := &Policy{byName: map[string]*Table{}}
	node = resolveAlias(node)
	if node == nil || node.Kind == 0 || (node.Kind == yaml.ScalarNode && node.Tag == "!!null") {
		return p
	}
	f := l.fields(node, "policy", "databases", "tables")
	if dbs, ok := f["databases"]; ok {
		p.databases = l.databases(dbs[1])
		defer func() {
			if len(p.tables) == 0 && len(p.databases) > 0 {
				l.errorf(dbs[0], "policy.databases lists databases but policy.tables names no table to protect in them")
			}
		}()
	}
	tables, ok := f["tables"]
	if !ok {
		return p
	}
	tn := tables[1]
	if tn.Kind == yaml.ScalarNode && tn.Tag == "!!null" {
		return p
	}
	if tn.Kind != yaml.SequenceNode {
		l.errorf(tn, "policy.tables must be a list")
		return p
	}
	lines := map[string]int{}
	for _, n := range tn.Content {
		t := l.table(resolveAlias(n))
		if t == nil {
			continue
		}
		q := t.QualifiedName()
		if line, dup := lines[q]; dup {
			l.errorf(n, "duplicate table %s (first at line %d)", q, line)
			continue
		}
		lines[q] = n.Line
		p.tables = append(p.tables, t)
		p.byName[q] = t
	}
	l.crossChecks(p)
	return p
}

// databases reads policy.databases: a non-empty list of distinct database
// names. An empty list is refused rather than read as "none": a policy
// that governs no database would let every session through untouched.
func (l *loader) databases(n *yaml.Node) []string {
	if n.Kind != yaml.SequenceNode {
		l.errorf(n, "policy.databases must be a list of database names")
		return nil
	}
	if len(n.Content) == 0 {
		l.errorf(n, "policy.databases must name at least one database (leave it out to govern every database)")
		return nil
	}
	dbs := make([]string, 0, len(n.Content))
	for _, e := range n.Content {
		e = resolveAlias(e)
		s, ok := l.scalar(e, "database name")
		if !ok {
			continue
		}
		switch {
		case s == "":
			l.errorf(e, "policy.databases: empty database name")
		case len(s) > 63:
			l.errorf(e, "policy.databases: database name %q is longer than 63 bytes", s)
		case strings.ContainsRune(s, 0):
			l.errorf(e, "policy.databases: database name %q holds a NUL byte", s)
		case slices.Contains(dbs, s):
			l.errorf(e, "policy.databases: duplicate database %q", s)
		default:
			dbs = append(dbs, s)
		}
	}
	if len(dbs) == 0 {
		return []string{} // errors reported; never nil, which would govern all
	}
	return dbs
}
