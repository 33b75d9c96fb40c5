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

// Normalizers are the blind-index normalizer names a policy may use, applied
// in the order the policy lists them.
var Normalizers = []string{"trim", "lower", "digits", "nfc"}

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
	f := l.fields(node, "policy", "tables", "databases")
	if dbs, ok := f["databases"]; ok {
		p.databases = l.databases(dbs[1])
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

// databases reads policy.databases: the names of the databases the policy
// governs, unique and non-empty.
func (l *loader) databases(n *yaml.Node) []string {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		l.errorf(n, "policy.databases must be a list of database names")
		return nil
	}
	var out []string
	for _, e := range n.Content {
		s, ok := l.scalar(e, "database name")
		switch {
		case !ok:
		case s == "":
			l.errorf(e, "policy.databases: empty database name")
		case slices.Contains(out, s):
			l.errorf(e, "policy.databases: duplicate database %q", s)
		default:
			out = append(out, s)
		}
	}
	return out
}

func (l *loader) table(n *yaml.Node) *Table {
	f := l.fields(n, "table", "name", "columns", "access")
	if f == nil {
		return nil
	}
	name, ok := f["name"]
	if !ok {
		l.errorf(n, "table needs a name")
		return nil
	}
	full, ok := l.scalar(name[1], "table name")
	if !ok {
		return nil
	}
	t := &Table{Schema: "public", byName: map[string]*Column{}}
	parts := strings.Split(full, ".")
	switch len(parts) {
	case 1:
		t.Name = parts[0]
	case 2:
		t.Schema, t.Name = parts[0], parts[1]
	default:
		l.errorf(name[1], "table name %q must be table or schema.table", full)
		return nil
	}
	for _, p := range parts {
		if err := checkIdent(p); err != "" {
			l.errorf(name[1], "table name %q: %s", full, err)
			return nil
		}
	}
	cols, ok := f["columns"]
	if !ok || cols[1].Kind != yaml.MappingNode || len(cols[1].Content) == 0 {
		at := n
		if ok {
			at = cols[1]
		}
		l.errorf(at, "table %s needs a non-empty columns mapping", t.QualifiedName())
		return nil
	}
	cn := cols[1]
	for i := 0; i+1 < len(cn.Content); i += 2 {
		k, v := cn.Content[i], resolveAlias(cn.Content[i+1])
		if err := checkIdent(k.Value); err != "" {
			l.errorf(k, "column name %q: %s", k.Value, err)
			continue
		}
		if _, dup := t.byName[k.Value]; dup {
			l.errorf(k, "duplicate column %s.%s", t.QualifiedName(), k.Value)
			continue
		}
		c := l.column(t, k.Value, k, v)
		if c == nil {
			continue
		}
		t.Columns = append(t.Columns, c)
		t.byName[c.Name] = c
	}
	var tableAccess *yaml.Node
	if a, ok := f["access"]; ok {
		tableAccess = a[1]
	}
	l.resolveAccess(t, tableAccess, l.accessNodes)
	// Blind-index columns must not collide with PHI columns or each other.
	seen := map[string]string{}
	for _, c := range t.Columns {
		if c.BlindIndex == nil {
			continue
		}
		bi := c.BlindIndex.Column
		if _, phi := t.byName[bi]; phi {
			l.errorf(l.lines[c], "blind-index column %q of %s collides with PHI column %s.%s", bi, c.QualifiedName(), t.QualifiedName(), bi)
		}
		if other, dup := seen[bi]; dup {
			l.errorf(l.lines[c], "blind-index column %q of %s is also the blind-index column of %s", bi, c.QualifiedName(), other)
		}
		seen[bi] = c.QualifiedName()
	}
	return t
}

var logicalTypes = []LogicalType{TypeText, TypeVarchar, TypeInt4, TypeInt8, TypeNumeric, TypeBool, TypeDate, TypeTimestamptz, TypeUUID, TypeJSONB, TypeBytea}

func (l *loader) column(t *Table, name string, k, n *yaml.Node) *Column {
	c := &Column{Table: t, Name: name, Storage: StorageText}
	l.lines[c] = k
	f := l.fields(n, "column "+t.QualifiedName()+"."+name, "type", "storage", "blind_index", "associated_data", "access")
	if f == nil {
		return nil
	}
	if a, ok := f["access"]; ok {
		l.accessNodes[c] = a[1]
	}
	ok := true
	if ty, has := f["type"]; !has {
		l.errorf(k, "column %s.%s needs a type (one of %s)", t.QualifiedName(), name, joinTypes())
		ok = false
	} else if s, good := l.scalar(ty[1], "type"); good {
		c.Type = LogicalType(s)
		if !slices.Contains(logicalTypes, c.Type) {
			l.errorf(ty[1], "column %s.%s: unknown type %q (one of %s)", t.QualifiedName(), name, s, joinTypes())
			ok = false
		}
	} else {
		ok = false
	}
	if st, has := f["storage"]; has {
		if s, good := l.scalar(st[1], "storage"); good {
			c.Storage = Storage(s)
			if c.Storage != StorageText && c.Storage != StorageBytea {
				l.errorf(st[1], "column %s.%s: unknown storage %q (text or bytea)", t.QualifiedName(), name, s)
				ok = false
			}
		} else {
			ok = false
		}
	}
	c.AssociatedData = t.QualifiedName() + "." + name
	if ad, has := f["associated_data"]; has {
		if s, good := l.scalar(ad[1], "associated_data"); good && s != "" {
			c.AssociatedData = s
			l.adLine[c] = ad[1]
		} else {
			if good {
				l.errorf(ad[1], "column %s.%s: associated_data must not be empty", t.QualifiedName(), name)
			}
			ok = false
		}
	}
	if bi, has := f["blind_index"]; has {
		c.BlindIndex = l.blindIndex(c, bi[1])
		if c.BlindIndex == nil {
			ok = false
		}
	}
	if !ok {
		return nil
	}
	return c
}

func joinTypes() string {
	s := make([]string, len(logicalTypes))
	for i, t := range logicalTypes {
		s[i] = string(t)
	}
	return strings.Join(s, ", ")
}

func (l *loader) blindIndex(c *Column, n *yaml.Node) *BlindIndex {
	b := &BlindIndex{Column: c.Name + "_bidx", Bits: 128, Group: c.QualifiedName()}
	what := "blind_index of " + c.QualifiedName()
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return b
	}
	f := l.fields(n, what, "column", "normalize", "bits", "index_group")
	if f == nil {
		return nil
	}
	ok := true
	if v, has := f["column"]; has {
		if s, good := l.scalar(v[1], "blind_index.column"); good {
			if err := checkIdent(s); err != "" {
				l.errorf(v[1], "%s: column %q: %s", what, s, err)
				ok = false
			}
			b.Column = s
		} else {
			ok = false
		}
	}
	if v, has := f["normalize"]; has {
		if v[1].Kind != yaml.SequenceNode {
			l.errorf(v[1], "%s: normalize must be a list of %s", what, strings.Join(Normalizers, ", "))
			ok = false
		} else {
			for _, e := range v[1].Content {
				s, good := l.scalar(e, "normalizer")
				if !good {
					ok = false
					continue
				}
				if !slices.Contains(Normalizers, s) {
					l.errorf(e, "%s: unknown normalizer %q (one of %s)", what, s, strings.Join(Normalizers, ", "))
					ok = false
					continue
				}
				b.Normalize = append(b.Normalize, s)
			}
		}
	}
	if v, has := f["bits"]; has {
		var bits int
		if err := v[1].Decode(&bits); err != nil {
			l.errorf(v[1], "%s: bits must be an integer", what)
			ok = false
		} else if bits%8 != 0 || bits < 32 || bits > 256 {
			l.errorf(v[1], "%s: bits %d must be a multiple of 8 between 32 and 256", what, bits)
			ok = false
		} else {
			b.Bits = bits
		}
	}
	if v, has := f["index_group"]; has {
		if s, good := l.scalar(v[1], "index_group"); good && s != "" {
			b.Group = s
		} else {
			if good {
				l.errorf(v[1], "%s: index_group must not be empty", what)
			}
			ok = false
		}
	}
	if !ok {
		return nil
	}
	return b
}

// crossChecks validates what spans tables: associated data is unique (else
// a ciphertext could be moved between columns undetected) and the columns of
// one index group agree on normalizers and bits (else joins on the group
// would silently miss).
func (l *loader) crossChecks(p *Policy) {
	ads := map[string]*Column{}
	groups := map[string]*Column{}
	for _, t := range p.tables {
		for _, c := range t.Columns {
			if o, dup := ads[c.AssociatedData]; dup {
				at := l.adLine[c]
				if at == nil {
					at = l.lines[c]
				}
				l.errorf(at, "associated data %q of %s is already used by %s", c.AssociatedData, c.QualifiedName(), o.QualifiedName())
			} else {
				ads[c.AssociatedData] = c
			}
			if c.BlindIndex == nil {
				continue
			}
			if o, has := groups[c.BlindIndex.Group]; has {
				if !slices.Equal(o.BlindIndex.Normalize, c.BlindIndex.Normalize) || o.BlindIndex.Bits != c.BlindIndex.Bits {
					l.errorf(l.lines[c], "index group %q: %s and %s must use the same normalize and bits", c.BlindIndex.Group, o.QualifiedName(), c.QualifiedName())
				}
			} else {
				groups[c.BlindIndex.Group] = c
			}
		}
	}
}

// checkIdent accepts names PostgreSQL stores as written: letters, digits,
// underscores and dollars, not starting with a digit or dollar, at most 63
// bytes (NAMEDATALEN-1). Upper-case letters are allowed and mean a quoted
// identifier.
func checkIdent(s string) string {
	if s == "" {
		return "empty identifier"
	}
	if len(s) > 63 {
		return "identifier longer than 63 bytes"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		case (c >= '0' && c <= '9' || c == '$') && i > 0:
		default:
			return "identifiers may hold letters, digits, _ and $ and must not start with a digit or $"
		}
	}
	return ""
}
