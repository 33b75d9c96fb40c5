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
// in the order the policy lists them (crypto/FORMAT.md defines each).
var Normalizers = []string{"trim", "lower", "digits", "nfc", "btrim", "ascii_lower"}

// SearchNormalizers are the normalizers a `search:` index may use: those
// that compute exactly what a PostgreSQL function computes, so that SQL
// asking for that function can be answered by the index (btrim: trim() and
// btrim(); ascii_lower: lower() and upper() under ctype C; digits:
// regexp_replace of [^0-9] by the empty string, flag g). trim, lower and nfc follow
// Unicode tables that no PostgreSQL function shares for every input; they
// remain for v1-form indexes, whose stored values use them.
var SearchNormalizers = []string{"btrim", "ascii_lower", "digits"}

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

func (l *loader) table(n *yaml.Node) *Table {
	f := l.fields(n, "table", "name", "columns", "access", "migrating")
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
	if m, ok := f["migrating"]; ok {
		t.Migrating = l.boolean(m[1], "migrating")
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
		for _, ix := range c.Indexes() {
			bi := ix.Column
			if _, phi := t.byName[bi]; phi {
				l.errorf(l.lines[c], "blind-index column %q of %s collides with PHI column %s.%s", bi, c.QualifiedName(), t.QualifiedName(), bi)
			}
			if other, dup := seen[bi]; dup {
				l.errorf(l.lines[c], "blind-index column %q of %s is also the blind-index column of %s", bi, c.QualifiedName(), other)
			}
			seen[bi] = c.QualifiedName()
		}
	}
	return t
}

var logicalTypes = []LogicalType{TypeText, TypeVarchar, TypeInt4, TypeInt8, TypeNumeric, TypeBool, TypeDate, TypeTimestamptz, TypeUUID, TypeJSONB, TypeBytea}

func (l *loader) column(t *Table, name string, k, n *yaml.Node) *Column {
	c := &Column{Table: t, Name: name, Storage: StorageText}
	l.lines[c] = k
	f := l.fields(n, "column "+t.QualifiedName()+"."+name, "type", "storage", "blind_index", "search", "associated_data", "access")
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
	group := c.QualifiedName()
	if bi, has := f["blind_index"]; has {
		b := l.blindIndex(c, bi[1])
		switch {
		case b == nil:
			ok = false
		case b.Exact():
			c.BlindIndex = b
		default:
			// The v1 form: one normalized index in <column>_bidx, keyed
			// by its group. It stays as it is (its values stay valid);
			// the column has no exact index, so = on it is refused
			// until the operator adds one (README: exact equality).
			b.Name, b.V1 = "v1", true
			c.Search = []*BlindIndex{b}
			if _, both := f["search"]; both {
				l.errorf(bi[0], "column %s: blind_index with normalize is the v1 form of a normalized index; with search: declared, blind_index must be the exact index (no normalize) and every normalized index goes under search", c.QualifiedName())
				ok = false
			}
		}
		if b != nil {
			group = b.Group
		}
	}
	if se, has := f["search"]; has && ok {
		if c.Type != TypeText && c.Type != TypeVarchar {
			l.errorf(se[0], "column %s: search indexes answer functions of text (lower(), trim(), regexp_replace()); the column is %s", c.QualifiedName(), c.Type)
			return nil
		}
		search, good := l.searchIndexes(c, group, se[1])
		if !good {
			ok = false
		}
		c.Search = search
	}
	if !ok {
		return nil
	}
	if c.BlindIndex != nil {
		c.indexes = append(c.indexes, c.BlindIndex)
	}
	c.indexes = append(c.indexes, c.Search...)
	return c
}

// searchIndexes reads the `search:` mapping of a column: name -> {normalize,
// column, bits}. Each index takes the column's index group.
func (l *loader) searchIndexes(c *Column, group string, n *yaml.Node) ([]*BlindIndex, bool) {
	what := "search of " + c.QualifiedName()
	n = resolveAlias(n)
	if n.Kind != yaml.MappingNode || len(n.Content) == 0 {
		l.errorf(n, "%s must be a non-empty mapping of index names to {normalize: [...]}", what)
		return nil, false
	}
	var out []*BlindIndex
	ok := true
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolveAlias(n.Content[i+1])
		name := k.Value
		if !searchName(name) {
			l.errorf(k, "%s: index name %q must be lower-case letters, digits and _, starting with a letter", what, name)
			ok = false
			continue
		}
		for _, o := range out {
			if o.Name == name {
				l.errorf(k, "%s: duplicate index name %q", what, name)
				ok = false
			}
		}
		b := &BlindIndex{Name: name, Column: c.Name + "_bidx_" + name, Bits: 128, Group: group}
		iw := what + "." + name
		f := l.fields(v, iw, "normalize", "column", "bits")
		if f == nil {
			ok = false
			continue
		}
		good := l.indexColumn(f, b, iw) && l.indexBits(f, b, iw)
		if v, has := f["normalize"]; !has {
			l.errorf(k, "%s needs normalize: a non-empty list of %s (the exact index is blind_index: {})", iw, strings.Join(SearchNormalizers, ", "))
			good = false
		} else if names, g := l.normalizers(v[1], iw); !g {
			good = false
		} else if len(names) == 0 {
			l.errorf(v[1], "%s: normalize must not be empty (the exact index is blind_index: {})", iw)
			good = false
		} else {
			for j, s := range names {
				if !slices.Contains(SearchNormalizers, s) {
					l.errorf(v[1].Content[j], "%s: normalizer %q cannot be used under search (one of %s): no PostgreSQL function computes it for every input, so no SQL could use the index; trim, lower and nfc remain only for v1-form indexes", iw, s, strings.Join(SearchNormalizers, ", "))
					good = false
				}
			}
			b.Normalize = names
		}
		if !good {
			ok = false
			continue
		}
		if err := checkIdent(b.Column); err != "" {
			l.errorf(k, "%s: index column %q: %s (set column:)", iw, b.Column, err)
			ok = false
			continue
		}
		out = append(out, b)
	}
	return out, ok
}

// searchName accepts index names that need no quoting in a column name.
func searchName(s string) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
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
	ok := l.indexColumn(f, b, what) && l.indexBits(f, b, what)
	if v, has := f["normalize"]; has {
		names, good := l.normalizers(v[1], what)
		b.Normalize = names
		ok = ok && good
	}
	if v, has := f["index_group"]; has {
		if s, good := l.scalar(v[1], "index_group"); good && s != "" && !strings.ContainsFunc(s, isControl) {
			b.Group = s
		} else {
			if good {
				l.errorf(v[1], "%s: index_group must not be empty or hold control characters", what)
			}
			ok = false
		}
	}
	if !ok {
		return nil
	}
	return b
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// indexColumn reads an index's `column:` override into b.
func (l *loader) indexColumn(f map[string][2]*yaml.Node, b *BlindIndex, what string) bool {
	v, has := f["column"]
	if !has {
		return true
	}
	s, good := l.scalar(v[1], what+".column")
	if !good {
		return false
	}
	if err := checkIdent(s); err != "" {
		l.errorf(v[1], "%s: column %q: %s", what, s, err)
		return false
	}
	b.Column = s
	return true
}

// indexBits reads an index's `bits:` into b.
func (l *loader) indexBits(f map[string][2]*yaml.Node, b *BlindIndex, what string) bool {
	v, has := f["bits"]
	if !has {
		return true
	}
	var bits int
	if err := v[1].Decode(&bits); err != nil {
		l.errorf(v[1], "%s: bits must be an integer", what)
		return false
	}
	if bits%8 != 0 || bits < 32 || bits > 256 {
		l.errorf(v[1], "%s: bits %d must be a multiple of 8 between 32 and 256", what, bits)
		return false
	}
	b.Bits = bits
	return true
}

// normalizers reads a list of normalizer names.
func (l *loader) normalizers(n *yaml.Node, what string) ([]string, bool) {
	if n.Kind != yaml.SequenceNode {
		l.errorf(n, "%s: normalize must be a list of %s", what, strings.Join(Normalizers, ", "))
		return nil, false
	}
	var out []string
	ok := true
	for _, e := range n.Content {
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
		out = append(out, s)
	}
	return out, ok
}

// crossChecks validates what spans tables: associated data is unique (else
// a ciphertext could be moved between columns undetected); the indexes keyed
// by one group's key (exact and v1-form) agree on normalizers and bits, and
// so do the normalized indexes of one group with the same normalizers (else
// joins on the group would silently miss, or one key would index two
// functions of the value).
func (l *loader) crossChecks(p *Policy) {
	ads := map[string]*Column{}
	groups := map[string]*Column{}
	type normKey struct{ group, normalize string }
	norms := map[normKey]*Column{}
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
			for _, ix := range c.Indexes() {
				if !ix.GroupKeyed() {
					k := normKey{ix.Group, strings.Join(ix.Normalize, ",")}
					if o, has := norms[k]; has {
						if ob := sameNormalized(o, ix); ob != nil && ob.Bits != ix.Bits {
							l.errorf(l.lines[c], "index group %q: the normalized indexes (%s) of %s and %s must use the same bits", ix.Group, k.normalize, o.QualifiedName(), c.QualifiedName())
						}
					} else {
						norms[k] = c
					}
					continue
				}
				if o, has := groups[ix.Group]; has {
					ob := groupKeyed(o)
					if !slices.Equal(ob.Normalize, ix.Normalize) || ob.Bits != ix.Bits {
						l.errorf(l.lines[c], "index group %q: %s and %s must use the same normalize and bits", ix.Group, o.QualifiedName(), c.QualifiedName())
					}
				} else {
					groups[ix.Group] = c
				}
			}
		}
	}
}

// groupKeyed returns c's index keyed by its group alone.
func groupKeyed(c *Column) *BlindIndex {
	for _, ix := range c.Indexes() {
		if ix.GroupKeyed() {
			return ix
		}
	}
	return nil
}

// sameNormalized returns c's normalized index with the group and
// normalizers of ix.
func sameNormalized(c *Column, ix *BlindIndex) *BlindIndex {
	for _, o := range c.Search {
		if !o.GroupKeyed() && o.Group == ix.Group && slices.Equal(o.Normalize, ix.Normalize) {
			return o
		}
	}
	return nil
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
