package policy

import (
	"slices"
	"strings"
)

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
