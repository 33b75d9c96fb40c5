package policy

import (
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

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
