package policy

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Per-role access to PHI columns (issue 12.2). A table's `access:` is the
// default of its columns; a column's own `access:` overrides it field by
// field. A column with neither has no rule: every role reads it in
// plaintext, as phiproxy always did (PostgreSQL's own privileges still
// apply). With a rule, a role reads plaintext if it is listed in
// plaintext, the masked value if in masked, and is refused (42501) if in
// neither; it may search the column by equality (its blind index) if it
// reads plaintext or is listed in search. Roles count directly or through
// membership (the proxy reads pg_auth_members); rights add up, as GRANTs
// do, and `public` stands for every role.
//
//	access:
//	  plaintext: [clinician]
//	  masked:    [billing]
//	  mask:      { last: 4 }     # null (default), year, { last: N, pad: "…" }, { replace: VALUE }
//	  search:    [intake_app]    # find rows by this column without reading it

// Public is the role name that stands for every role, as PUBLIC does in
// PostgreSQL's GRANT.
const Public = "public"

// Access is a column's rule, resolved from its own and its table's.
type Access struct {
	Plaintext []string // roles that read plaintext
	Masked    []string // roles that read Mask's form of the value
	Search    []string // roles that may compare the column by equality without reading it
	Mask      Mask
}

// MaskKind is how a masked value is shown.
type MaskKind string

// The masks.
const (
	// MaskNull shows NULL (any type). The default.
	MaskNull MaskKind = "null"
	// MaskLast shows Pad followed by the last Last characters (text,
	// varchar); a value of Last characters or fewer shows as Pad alone.
	MaskLast MaskKind = "last"
	// MaskReplace shows Replace, a value of the column's type (any type).
	MaskReplace MaskKind = "replace"
	// MaskYear shows January 1st of the value's year, at 00:00 UTC for a
	// timestamptz (date, timestamptz).
	MaskYear MaskKind = "year"
)

// DefaultPad stands for the hidden characters of a MaskLast value.
const DefaultPad = "****"

// Mask is how masked roles see a column.
type Mask struct {
	Kind    MaskKind
	Last    int    // MaskLast: characters kept
	Pad     string // MaskLast: stands for the rest
	Replace string // MaskReplace: the value in PostgreSQL's text input form
}

// Read is what a role gets when a column is in a result.
type Read uint8

// Read access levels, from least to most.
const (
	ReadDenied Read = iota
	ReadMasked
	ReadPlaintext
)

// For returns what a session whose roles (itself and every role it is a
// member of) are roles gets: the read level and whether it may search.
func (a *Access) For(roles map[string]bool) (read Read, search bool) {
	if a == nil {
		return ReadPlaintext, true
	}
	has := func(list []string) bool {
		for _, r := range list {
			if r == Public || roles[r] {
				return true
			}
		}
		return false
	}
	switch {
	case has(a.Plaintext):
		return ReadPlaintext, true
	case has(a.Masked):
		read = ReadMasked
	}
	return read, has(a.Search)
}

// AccessRoles returns the roles any access rule names (public excepted),
// sorted: the ones whose membership the proxy reads for each session.
// Empty when the policy has no access rule.
func (p *Policy) AccessRoles() []string {
	var out []string
	for _, t := range p.Tables() {
		for _, c := range t.Columns {
			if a := c.Access; a != nil {
				for _, list := range [][]string{a.Plaintext, a.Masked, a.Search} {
					for _, r := range list {
						if r != Public && !slices.Contains(out, r) {
							out = append(out, r)
						}
					}
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// HasAccessRules reports whether any column has an access rule.
func (p *Policy) HasAccessRules() bool {
	for _, t := range p.Tables() {
		for _, c := range t.Columns {
			if c.Access != nil {
				return true
			}
		}
	}
	return false
}

// accessSpec is one `access:` mapping as written: nil fields were absent.
type accessSpec struct {
	plaintext, masked, search *[]string
	mask                      *Mask
	maskNode                  *yaml.Node
}

// access reads an `access:` mapping of what (a table or a column).
func (l *loader) access(n *yaml.Node, what string) *accessSpec {
	f := l.fields(n, "access of "+what, "plaintext", "masked", "search", "mask")
	if f == nil {
		return nil
	}
	s := &accessSpec{}
	for name, dst := range map[string]**[]string{"plaintext": &s.plaintext, "masked": &s.masked, "search": &s.search} {
		if v, ok := f[name]; ok {
			roles := l.roles(v[1], what, name)
			*dst = &roles
		}
	}
	if v, ok := f["mask"]; ok {
		s.mask, s.maskNode = l.mask(v[1], what), v[1]
	}
	return s
}

// roles reads a list of role names.
func (l *loader) roles(n *yaml.Node, what, field string) []string {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return []string{}
	}
	if n.Kind != yaml.SequenceNode {
		l.errorf(n, "access of %s: %s must be a list of role names", what, field)
		return []string{}
	}
	out := []string{}
	for _, e := range n.Content {
		r, ok := l.scalar(e, "role name")
		switch {
		case !ok:
		case r == "" || len(r) > 63 || strings.ContainsRune(r, 0):
			l.errorf(e, "access of %s: %s: role name %q must be 1 to 63 bytes", what, field, r)
		case slices.Contains(out, r):
			l.errorf(e, "access of %s: %s: duplicate role %q", what, field, r)
		case strings.EqualFold(r, Public):
			out = append(out, Public)
		default:
			out = append(out, r)
		}
	}
	return out
}

// mask reads a mask: null, year, { last: N, pad: S } or { replace: V }.
func (l *loader) mask(n *yaml.Node, what string) *Mask {
	if n.Kind == yaml.ScalarNode {
		switch {
		case n.Tag == "!!null" || n.Value == "null":
			return &Mask{Kind: MaskNull}
		case n.Value == "year":
			return &Mask{Kind: MaskYear}
		}
		l.errorf(n, "access of %s: mask %q: want null, year, { last: N } or { replace: VALUE }", what, n.Value)
		return nil
	}
	f := l.fields(n, "mask of "+what, "last", "pad", "replace")
	if f == nil {
		return nil
	}
	_, last := f["last"]
	_, repl := f["replace"]
	switch {
	case last && !repl:
		m := &Mask{Kind: MaskLast, Pad: DefaultPad}
		if err := f["last"][1].Decode(&m.Last); err != nil || m.Last < 1 || m.Last > 64 {
			l.errorf(f["last"][1], "access of %s: mask last must be an integer from 1 to 64", what)
			return nil
		}
		if p, ok := f["pad"]; ok {
			if m.Pad, ok = l.scalar(p[1], "pad"); !ok {
				return nil
			}
		}
		return m
	case repl && !last:
		if _, ok := f["pad"]; ok {
			l.errorf(f["pad"][0], "access of %s: pad goes with last", what)
			return nil
		}
		v, ok := l.scalar(f["replace"][1], "replace")
		if !ok {
			return nil
		}
		return &Mask{Kind: MaskReplace, Replace: v}
	}
	l.errorf(n, "access of %s: a mask mapping has last (and pad) or replace", what)
	return nil
}

// resolveAccess gives each column of t its rule: the table's access with
// the column's own fields over it, checked against the column's type.
func (l *loader) resolveAccess(t *Table, tableNode *yaml.Node, columnNodes map[*Column]*yaml.Node) {
	var def *accessSpec
	if tableNode != nil {
		if def = l.access(tableNode, t.QualifiedName()); def == nil {
			return
		}
		t.Access = def.resolve(nil)
		l.checkBoth(tableNode, t.QualifiedName(), t.Access)
	}
	for _, c := range t.Columns {
		var own *accessSpec
		if n := columnNodes[c]; n != nil {
			if own = l.access(n, c.QualifiedName()); own == nil {
				continue
			}
		}
		if def == nil && own == nil {
			continue
		}
		c.Access = own.resolve(def)
		at := l.lines[c]
		switch {
		case own != nil && own.maskNode != nil:
			at = own.maskNode
		case def != nil && def.maskNode != nil:
			at = def.maskNode
		}
		if own != nil && (own.plaintext != nil || own.masked != nil) {
			l.checkBoth(columnNodes[c], c.QualifiedName(), c.Access)
		}
		if msg := checkMask(c.Type, c.Access.Mask); msg != "" {
			inherited := ""
			if own == nil || own.mask == nil {
				inherited = " (inherited from the table's access: give the column its own mask)"
			}
			l.errorf(at, "access of %s: %s%s", c.QualifiedName(), msg, inherited)
		}
	}
}

// checkBoth refuses a role listed both in plaintext and in masked: the
// rule would say two things of it.
func (l *loader) checkBoth(n *yaml.Node, what string, a *Access) {
	for _, r := range a.Plaintext {
		if slices.Contains(a.Masked, r) {
			l.errorf(n, "access of %s: role %q is in both plaintext and masked", what, r)
		}
	}
}

// resolve applies s over def (either may be nil).
func (s *accessSpec) resolve(def *accessSpec) *Access {
	a := &Access{Mask: Mask{Kind: MaskNull}}
	for _, x := range []*accessSpec{def, s} {
		if x == nil {
			continue
		}
		if x.plaintext != nil {
			a.Plaintext = *x.plaintext
		}
		if x.masked != nil {
			a.Masked = *x.masked
		}
		if x.search != nil {
			a.Search = *x.search
		}
		if x.mask != nil {
			a.Mask = *x.mask
		}
	}
	return a
}

var (
	uuidRE    = regexp.MustCompile(`^\{?[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\}?$`)
	numericRE = regexp.MustCompile(`^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$|^(?i:nan)$`)
)

// checkMask says what is wrong with mask m on a column of type t, or "".
// A replacement is checked for its form here; the proxy converts it with
// the column's type at startup and refuses to start if it cannot.
func checkMask(t LogicalType, m Mask) string {
	switch m.Kind {
	case MaskLast:
		if t != TypeText && t != TypeVarchar {
			return fmt.Sprintf("mask last needs a text or varchar column, not %s", t)
		}
	case MaskYear:
		if t != TypeDate && t != TypeTimestamptz {
			return fmt.Sprintf("mask year needs a date or timestamptz column, not %s", t)
		}
	case MaskReplace:
		v := m.Replace
		ok := true
		switch t {
		case TypeInt4:
			_, err := strconv.ParseInt(strings.TrimSpace(v), 10, 32)
			ok = err == nil
		case TypeInt8:
			_, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			ok = err == nil
		case TypeNumeric:
			ok = numericRE.MatchString(v)
		case TypeBool:
			_, err := strconv.ParseBool(strings.TrimSpace(v))
			ok = err == nil
		case TypeDate:
			_, err := time.Parse(time.DateOnly, v)
			ok = err == nil
		case TypeUUID:
			ok = uuidRE.MatchString(v)
		case TypeJSONB:
			ok = json.Valid([]byte(v))
		}
		if !ok {
			return fmt.Sprintf("mask replace: the value is not a valid %s", t)
		}
	}
	return ""
}
