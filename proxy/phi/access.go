package phi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/rewrite"
)

// Per-role access to PHI columns (issue 12.2; the rules are the policy's,
// policy/access.go). At the start of each session the proxy reads which of
// the roles the policy names the session's user is, directly or through
// pg_auth_members, and resolves every column with a rule to what the
// session gets: plaintext, a masked value, or permission denied (42501).
//
// Where each is enforced:
//
//   - A search (a blind-index comparison) by a role without the search
//     right, and a RETURNING of a column the role may not read, are refused
//     at Query or Parse, before anything runs: the raise aborts a
//     transaction block as a server error would.
//   - A Bind of a statement whose described result holds a denied column is
//     refused the same way.
//   - A result whose RowDescription names a denied column (a simple Query's
//     SELECT, a portal never described, FETCH) is refused when the
//     description arrives: the client gets 42501 and none of its rows. The
//     statement has run on the server then; a SELECT changes nothing, and
//     statements that write are refused before they run (RETURNING).
//   - Masks apply after decryption, per value, in the client's format and
//     the column's logical type (reader.masked below); a masked NULL, and a
//     fixed replacement, are not even decrypted.
//
// Membership is read once per session: GRANTs made during a session apply
// from the next one. Superusers get what their own memberships give them:
// the rule names roles, and a superuser is not a member of every role here.

// colAccess is what one session gets of one column with a rule.
type colAccess struct {
	read   policy.Read
	search bool
	mask   *columnMask // when read is ReadMasked
}

// columnMask is a column's mask, resolved at startup.
type columnMask struct {
	kind policy.MaskKind
	last int
	pad  []byte
	// replace is the canonical plaintext of a MaskReplace value.
	replace []byte
}

// accessRules are the engine's: the masks of the columns with a rule and
// the query that reads a session's roles. Immutable.
type accessRules struct {
	masks     map[*policy.Column]*columnMask
	rolesSQL  string
	roleNames []string
}

// newAccessRules resolves the policy's access rules; nil when it has none.
// A replacement value that is not a valid value of its column's type
// fails here, naming the column.
func newAccessRules(pol *policy.Policy) (*accessRules, error) {
	if !pol.HasAccessRules() {
		return nil, nil
	}
	a := &accessRules{masks: map[*policy.Column]*columnMask{}, roleNames: pol.AccessRoles()}
	codec := newValueCodec(nil)
	for _, t := range pol.Tables() {
		for _, c := range t.Columns {
			if c.Access == nil {
				continue
			}
			m := c.Access.Mask
			cm := &columnMask{kind: m.Kind, last: m.Last, pad: []byte(m.Pad)}
			if m.Kind == policy.MaskReplace {
				v, err := codec.canonical(nil, c.Type, formatText, []byte(m.Replace))
				if err == nil && c.Type == policy.TypeJSONB && !json.Valid(v) {
					err = fmt.Errorf("invalid json")
				}
				if err != nil {
					return nil, fmt.Errorf("policy: access of %s: mask replace: the value is not a valid %s", c.QualifiedName(), c.Type)
				}
				cm.replace = v
			}
			a.masks[c] = cm
		}
	}
	a.rolesSQL = rolesQuery(a.roleNames)
	return a, nil
}

// rolesQuery returns the query listing which of names the session's user
// is: itself, or a member of, directly or through other roles
// (pg_auth_members, whatever the membership's INHERIT and SET options: a
// member may SET ROLE, so rights add up as with GRANTs).
func rolesQuery(names []string) string {
	var b strings.Builder
	b.WriteString(`WITH RECURSIVE m(oid) AS (` +
		`SELECT oid FROM pg_catalog.pg_roles WHERE rolname = session_user` +
		` UNION SELECT a.roleid FROM pg_catalog.pg_auth_members a JOIN m ON a.member = m.oid)` +
		` SELECT r.rolname FROM pg_catalog.pg_roles r JOIN m ON r.oid = m.oid WHERE r.rolname IN (`)
	for i, n := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quoteLiteral(n))
	}
	b.WriteString(")")
	return b.String()
}

// startAccess reads the session's roles and resolves what it gets of each
// column with a rule. NewSession, before the client can send anything.
func (s *session) startAccess() error {
	rules := s.eng.access
	if rules == nil {
		return nil
	}
	rows, err := s.c.Query(rules.rolesSQL)
	if err != nil {
		return fmt.Errorf("read role memberships: %w", err)
	}
	roles := make(map[string]bool, len(rows))
	for _, r := range rows {
		if len(r) == 1 {
			roles[string(r[0])] = true
		}
	}
	s.access = make(map[*policy.Column]colAccess, len(rules.masks))
	for c, m := range rules.masks {
		read, search := c.Access.For(roles)
		ca := colAccess{read: read, search: search}
		if read == policy.ReadMasked {
			ca.mask = m
		}
		s.access[c] = ca
	}
	return nil
}

// accessOf returns what the session gets of c (plaintext and search for a
// column without a rule).
func (s *session) accessOf(c *policy.Column) colAccess {
	if a, ok := s.access[c]; ok {
		return a
	}
	return colAccess{read: policy.ReadPlaintext, search: true}
}

// AccessError refuses a statement that would show the session a column
// its role may not read, or search one it may not search (42501).
type AccessError struct {
	Column *policy.Column
	Search bool // the refused use is a search
}

func (e *AccessError) Error() string { return e.ClientMessage() }
func (e *AccessError) SQLState() string {
	return pgerrcode.InsufficientPrivilege
}
func (e *AccessError) Reason() string { return "permission" }
func (e *AccessError) ClientMessage() string {
	if e.Search {
		return fmt.Sprintf("permission denied to search by column %s of table %s", e.Column.Name, e.Column.Table.QualifiedName())
	}
	return fmt.Sprintf("permission denied for column %s of table %s", e.Column.Name, e.Column.Table.QualifiedName())
}

// Hint implements the optional hint of proxy.ClientError.
func (e *AccessError) Hint() string {
	if e.Search {
		return "The policy's access rule for this column does not give this role the search right."
	}
	return "The policy's access rule for this column shows it to this role neither in plaintext nor masked; leave the column out of the result."
}

// checkAccess refuses a plan whose statements search a column the session
// may not search, or return (RETURNING) one it may not read.
func (s *session) checkAccess(plan *rewrite.Plan) error {
	if s.access == nil {
		return nil
	}
	for i := range plan.Statements {
		st := &plan.Statements[i]
		for _, u := range st.Uses {
			if u.Action == rewrite.ActionIndex && !s.accessOf(u.Column).search {
				return &AccessError{Column: u.Column, Search: true}
			}
		}
		for _, rc := range st.Returning {
			if s.accessOf(rc.Column).read == policy.ReadDenied {
				return &AccessError{Column: rc.Column}
			}
		}
	}
	return nil
}

// checkDescribed refuses binding a statement whose described result holds
// a column the session may not read.
func (s *session) checkDescribed(st *statement) error {
	if s.access == nil {
		return nil
	}
	rd := st.rd.Load()
	if rd == nil {
		return nil
	}
	for _, f := range rd.Fields {
		if a, ok := st.db.cat.lookup(f.TableOID, int16(f.TableAttributeNumber)); ok && !a.index {
			if s.accessOf(a.column).read == policy.ReadDenied {
				return &AccessError{Column: a.column}
			}
		}
	}
	return nil
}

// resultTransform is newResultTransform with the session's access applied:
// masked columns get their mask; a denied column refuses the result when
// deny is set (a result that returns rows), and is left alone in a
// statement's description.
func (s *session) resultTransform(cat *catalog, rd *pgproto3.RowDescription, formats []int16, deny bool) (*resultTransform, error) {
	t := newResultTransform(cat, s.eng.cols, rd, formats)
	if t == nil || s.access == nil {
		return t, nil
	}
	for i := range t.cols {
		c := &t.cols[i]
		if c.pc == nil {
			continue
		}
		a := s.accessOf(c.pc.col)
		switch a.read {
		case policy.ReadMasked:
			c.mask = a.mask
		case policy.ReadDenied:
			if deny {
				return nil, &AccessError{Column: c.pc.col}
			}
		}
	}
	return t, nil
}

// masked appends to the reader's buffer the masked form of v, the stored
// value of column c, in the column's type and the client's format; a
// masked NULL sets the value to NULL. The plaintext is decrypted only for
// the masks that need it (last, year).
func (r *reader) masked(c *resultCol, i int, v []byte, row *pgproto3.DataRow) error {
	m := c.mask
	var plain []byte
	switch m.kind {
	case policy.MaskNull:
		row.Values[i] = nil
		return nil
	case policy.MaskReplace:
		plain = m.replace
	default:
		if _, err := r.open(c, v); err != nil {
			return err
		}
		// r.envelope is free again: it holds the masked form.
		if m.kind == policy.MaskLast {
			r.envelope = maskLast(r.envelope[:0], r.plain, m.last, m.pad)
		} else {
			var ok bool
			if r.envelope, ok = maskYear(r.envelope[:0], r.plain, c.pc.col.Type); !ok {
				row.Values[i] = nil // not a form whose year can be told: show nothing
				return nil
			}
		}
		plain = r.envelope
	}
	start := len(r.buf)
	var err error
	if r.buf, err = r.codec.present(r.buf, c.pc.col.Type, c.format, plain); err != nil {
		return &unreadableError{Column: c.pc.col.QualifiedName(), Err: err}
	}
	r.spans = append(r.spans, span{i, start, len(r.buf)})
	return nil
}

// maskLast appends pad and the last n characters of plain; plain of n
// characters or fewer shows as pad alone.
func maskLast(dst, plain []byte, n int, pad []byte) []byte {
	dst = append(dst, pad...)
	if utf8.RuneCount(plain) <= n {
		return dst
	}
	i := len(plain)
	for range n {
		_, size := utf8.DecodeLastRune(plain[:i])
		i -= size
	}
	return append(dst, plain[i:]...)
}

// maskYear appends January 1st of the year of plain, the canonical text of
// a date (YYYY-MM-DD[ BC]) or timestamptz (YYYY-MM-DD HH:MM:SS[.f]Z[ BC],
// UTC); infinity stays infinity. ok is false for any other form.
func maskYear(dst, plain []byte, t policy.LogicalType) ([]byte, bool) {
	if bytes.Equal(plain, []byte("infinity")) || bytes.Equal(plain, []byte("-infinity")) {
		return append(dst, plain...), true
	}
	y := 0
	for y < len(plain) && plain[y] >= '0' && plain[y] <= '9' {
		y++
	}
	if y < 4 || y >= len(plain) || plain[y] != '-' {
		return dst, false
	}
	dst = append(dst, plain[:y]...)
	if t == policy.TypeTimestamptz {
		dst = append(dst, "-01-01 00:00:00Z"...)
	} else {
		dst = append(dst, "-01-01"...)
	}
	if bytes.HasSuffix(plain, []byte(" BC")) {
		dst = append(dst, " BC"...)
	}
	return dst, true
}
