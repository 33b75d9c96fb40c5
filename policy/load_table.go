package policy

import (
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

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

func joinTypes() string {
	s := make([]string, len(logicalTypes))
	for i, t := range logicalTypes {
		s[i] = string(t)
	}
	return strings.Join(s, ", ")
}
