package phi

import (
	"bytes"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/internal/auditlog"
	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/rewrite"
)

// The audit trail (issue 12.1): one record per executed statement that
// reads, writes or searches a PHI column (or deletes rows of a PHI table),
// and one per refusal, handed to the AuditLog (internal/auditlog writes
// and chains them). Records name the session, tables, columns, operations,
// row counts, outcomes and SQLSTATEs: never a value, never SQL text (the
// statement is named by its pg_query fingerprint).
//
// Where records are made:
//
//   - A refusal: in refuse (raise.go), on clientToServer, with what the
//     proxy knew of the statement (cur).
//   - An executed statement: on serverToClient, by an audited Responder
//     around the statement's result, when the server completes it: each
//     CommandComplete (its tag gives the rows), an ErrorResponse, a
//     PortalSuspended, or the proxy failing the result (a value that did
//     not decrypt, a denied column). Reads are the result's PHI columns
//     (RowDescription), with the session's access to each; writes and
//     searches are the plan's (rewrite.Statement.Uses).
//
// With audit.on_failure: refuse, statements on PHI tables are refused
// (58030) while the log cannot write; the statements already under way
// complete, their records counted lost if they cannot be written.

// AuditLog receives the PHI layer's audit records; *auditlog.Log
// implements it.
type AuditLog interface {
	// Write queues a record. It may wait, never longer than a bound the
	// implementation sets (audit.max_wait).
	Write(*auditlog.Record)
	// Refusing reports whether statements on PHI tables must be refused
	// because their records cannot be written.
	Refusing() bool
}

// errAuditUnavailable refuses statements on PHI tables while the audit log
// cannot write (audit.on_failure: refuse).
var errAuditUnavailable error = &refusal{pgerrcode.IOError, "audit",
	"the audit log cannot be written; statements on PHI tables are refused until it recovers"}

// curStatement is what the proxy knows of the statement it is handling on
// clientToServer, for the record of a refusal: its text (only ever
// fingerprinted) or its plan.
type curStatement struct {
	text string
	plan *rewrite.Plan
}

// startAudit fixes who the session's records are about. NewSession.
func (s *session) startAudit() {
	if s.eng.audit == nil {
		return
	}
	c := s.c
	s.who = &auditlog.Session{ConnID: c.ID(), User: c.User(), Database: c.Database(),
		ClientAddr: c.RemoteAddr(), ClientCert: c.ClientCertSubject()}
}

// checkPlan runs before a Query's or Parse's plan is used: it notes the
// plan for refusal records and refuses it when the audit log cannot write
// (a plan that touches PHI tables) or the session's access forbids it.
func (s *session) checkPlan(plan *rewrite.Plan) error {
	s.cur.plan = plan
	if s.eng.audit != nil && !plan.Passthrough && s.eng.audit.Refusing() {
		return errAuditUnavailable
	}
	return s.checkAccess(plan)
}

// checkBind runs before a Bind of a known statement.
func (s *session) checkBind(st *statement) error {
	s.cur = curStatement{plan: st.plan}
	if s.eng.audit != nil && !st.plan.Passthrough && s.eng.audit.Refusing() {
		return errAuditUnavailable
	}
	return s.checkDescribed(st)
}

// auditRefusal records a refusal: r is what the client gets, err why.
func (s *session) auditRefusal(r raised, err error) {
	if s.who == nil {
		return
	}
	rec := &auditlog.Record{Time: time.Now(), Type: auditlog.TypeRefusal, Session: s.who, Rows: -1,
		Outcome: auditlog.OutcomeRefused, SQLState: r.Code, Reason: r.Reason}
	if p := s.cur.plan; p != nil {
		rec.Fingerprint = p.Fingerprint
		if len(p.Statements) == 1 {
			st := &p.Statements[0]
			rec.Statement = kindName(st.Kind)
			rec.Tables = s.eng.names.tables(nil, st.Tables)
			rec.Columns = s.eng.names.usedColumns(nil, st.Uses)
		} else {
			for i := range p.Statements {
				rec.Tables = s.eng.names.tables(rec.Tables, p.Statements[i].Tables)
			}
		}
	}
	if rec.Fingerprint == "" && s.cur.text != "" {
		rec.Fingerprint = rewrite.Fingerprint(s.cur.text)
	}
	var ae *AccessError
	if errors.As(err, &ae) {
		op := auditlog.OpRead
		if ae.Search {
			op = auditlog.OpSearch
		}
		rec.Columns = denyColumn(rec.Columns, s.eng.names.col[ae.Column], op)
		rec.Tables = addName(rec.Tables, s.eng.names.table[ae.Column.Table])
	}
	if r.schema != "" && r.table != "" {
		rec.Tables = addName(rec.Tables, r.schema+"."+r.table)
		if r.column != "" {
			name := r.schema + "." + r.table + "." + r.column
			listed := false
			for _, c := range rec.Columns {
				listed = listed || c.Name == name
			}
			if !listed {
				rec.Columns = append(rec.Columns, auditlog.Column{Name: name})
			}
		}
	}
	s.eng.audit.Write(rec)
}

// queryResult is the Responder of a simple Query's results.
func (s *session) queryResult(plan *rewrite.Plan) proxy.Responder {
	r := s.newResult(s.db, nil)
	if s.who == nil {
		return r
	}
	return &audited{result: r, plan: plan, query: true}
}

// newPortal returns a portal of st whose results r rewrites, audited when
// the audit log is on.
func (s *session) newPortal(st *statement, r *result) *portal {
	p := &portal{stmt: st, result: r}
	if s.who != nil {
		p.audit = &audited{result: r, plan: st.plan}
	}
	return p
}

// responder is the Responder of the portal's Describe and Execute.
func (p *portal) responder() proxy.Responder {
	if p.audit != nil {
		return p.audit
	}
	return p.result
}

// audited is a result's Responder that also writes the audit record of
// each statement it answers: the statements of a simple Query in turn, or
// each execution of a portal. serverToClient.
type audited struct {
	*result
	plan  *rewrite.Plan
	query bool // a simple Query's results (else a portal's)

	// The statement being answered.
	index     int   // in plan.Statements (a simple Query's advance)
	described bool  // a simple Query's statement has a result description
	rows      int64 // DataRows that went through
	done      bool  // its record is written (the proxy failed its result)
}

var (
	_ proxy.Responder        = (*audited)(nil)
	_ proxy.CommandCompleter = (*audited)(nil)
	_ proxy.RowTransformer   = (*audited)(nil)
)

// RowDescription implements proxy.Responder.
func (a *audited) RowDescription(dst, msg []byte) ([]byte, proxy.RowTransformer, error) {
	out, rt, err := a.result.RowDescription(dst, msg)
	if a.query {
		a.described = true
	}
	if err != nil {
		a.failed(err)
		return out, nil, err
	}
	if rt != nil {
		rt = a
	}
	return out, rt, nil
}

// Rows implements proxy.Responder.
func (a *audited) Rows() (proxy.RowTransformer, error) {
	rt, err := a.result.Rows()
	if err != nil {
		a.failed(err)
		return nil, err
	}
	if rt != nil {
		rt = a
	}
	return rt, nil
}

// DataRow implements proxy.RowTransformer.
func (a *audited) DataRow(dst, msg []byte) ([]byte, error) {
	out, err := a.result.DataRow(dst, msg)
	if err != nil {
		a.failed(err)
		return out, err
	}
	a.rows++
	return out, nil
}

// CommandComplete implements proxy.CommandCompleter.
func (a *audited) CommandComplete(tag []byte) {
	a.record(auditlog.OutcomeOK, "00000", tagRows(tag))
}

// ErrorResponse implements proxy.Responder: the server failed the
// statement (a simple Query's text stops there).
func (a *audited) ErrorResponse(dst, msg []byte) []byte {
	out := a.result.ErrorResponse(dst, msg)
	// The code the client gets: the proxy's for an invalid value's marker.
	a.record(auditlog.OutcomeError, errorCode(out[len(dst):]), -1)
	return out
}

// Answered implements proxy.Responder.
func (a *audited) Answered(typ byte) {
	if typ == 's' { // PortalSuspended: the rows so far
		a.record(auditlog.OutcomeSuspended, "00000", a.rows)
	}
	a.result.Answered(typ)
}

// failed records that the proxy failed the current statement's result.
func (a *audited) failed(err error) {
	info := proxy.Classify(err)
	outcome := auditlog.OutcomeError
	var ae *AccessError
	if errors.As(err, &ae) {
		outcome = auditlog.OutcomeRefused
	}
	a.write(outcome, info.Code, -1, ae, info.Reason)
	a.done = true
}

// record ends the current statement: its record unless one was written.
func (a *audited) record(outcome, code string, rows int64) {
	if !a.done {
		a.write(outcome, code, rows, nil, "")
	}
	a.done, a.described, a.rows = false, false, 0
	if a.query {
		a.index++
	}
}

// write writes the record of the current statement, if it used PHI.
func (a *audited) write(outcome, code string, rows int64, denied *AccessError, reason string) {
	var st *rewrite.Statement
	if a.plan != nil && a.index < len(a.plan.Statements) {
		st = &a.plan.Statements[a.index]
	}
	n := 1
	if st != nil {
		n += len(st.Uses)
	}
	if t := a.result.t; t != nil {
		n += len(t.cols)
	}
	cols := make([]auditlog.Column, 0, n)
	if st != nil {
		cols = a.s.eng.names.usedColumns(cols, st.Uses)
	}
	cols = a.reads(cols)
	if denied != nil {
		cols = denyColumn(cols, a.s.eng.names.col[denied.Column], auditlog.OpRead)
	}
	deletes := st != nil && st.Kind == rewrite.KindDelete && len(st.Tables) > 0
	if len(cols) == 0 && !deletes {
		return // cols did not escape: allocated on the stack when small
	}
	rec := &auditlog.Record{Time: time.Now(), Type: auditlog.TypeStatement, Session: a.s.who, Columns: cols,
		Rows: rows, Outcome: outcome, SQLState: code, Reason: reason}
	if denied != nil {
		rec.Type = auditlog.TypeRefusal
	}
	if a.plan != nil {
		rec.Fingerprint = a.plan.Fingerprint
		if n := len(a.plan.Statements); n > 1 {
			rec.Index, rec.Count = a.index, n
		}
	}
	if st != nil {
		rec.Statement = kindName(st.Kind)
		rec.Tables = a.s.eng.names.tables(nil, st.Tables)
	}
	for _, c := range cols {
		if i := strings.LastIndexByte(c.Name, '.'); i > 0 {
			rec.Tables = addName(rec.Tables, c.Name[:i])
		}
	}
	a.s.eng.audit.Write(rec)
}

// reads appends the PHI columns of the current statement's result, with
// the session's access to each.
func (a *audited) reads(cols []auditlog.Column) []auditlog.Column {
	r := a.result
	t := r.t
	switch {
	case a.query && !a.described:
		return cols
	case !a.query && !r.ready:
		// A portal whose rows never came (none, or an error first): its
		// statement's description says what it would have read.
		var rd *pgproto3.RowDescription
		if r.stmt != nil {
			rd = r.stmt.rd.Load()
		}
		if rd == nil {
			return cols
		}
		t, _ = a.s.resultTransform(r.db.cat, rd, r.formats, false)
	}
	if t == nil {
		return cols
	}
	for i := range t.cols {
		c := &t.cols[i]
		if c.pc == nil {
			continue
		}
		cols = addColumn(cols, auditlog.Column{Name: a.s.eng.names.col[c.pc.col], Op: auditlog.OpRead, Access: accessName(a.s.accessOf(c.pc.col).read)})
	}
	return cols
}

// accessName is how a read appears in a record.
func accessName(r policy.Read) string {
	switch r {
	case policy.ReadMasked:
		return auditlog.AccessMasked
	case policy.ReadDenied:
		return auditlog.AccessDenied
	}
	return auditlog.AccessPlaintext
}

// denyColumn marks the use op of column name denied, adding it if it is
// not listed.
func denyColumn(cols []auditlog.Column, name, op string) []auditlog.Column {
	for i := range cols {
		if cols[i].Name == name && cols[i].Op == op {
			cols[i].Access = auditlog.AccessDenied
			return cols
		}
	}
	return append(cols, auditlog.Column{Name: name, Op: op, Access: auditlog.AccessDenied})
}

// addColumn appends c unless the same column and operation is listed (a
// column selected twice is one read).
func addColumn(cols []auditlog.Column, c auditlog.Column) []auditlog.Column {
	for _, x := range cols {
		if x.Name == c.Name && x.Op == c.Op {
			return cols
		}
	}
	return append(cols, c)
}

// auditNames are the qualified names of the policy's tables and columns,
// made once: records name them without allocating. Immutable.
type auditNames struct {
	col   map[*policy.Column]string
	table map[*policy.Table]string
	// one is each table's name alone, with no room to append: a record of
	// a statement on one table shares it (appending copies it).
	one map[*policy.Table][]string
}

func newAuditNames(pol *policy.Policy) auditNames {
	n := auditNames{col: map[*policy.Column]string{}, table: map[*policy.Table]string{}, one: map[*policy.Table][]string{}}
	for _, t := range pol.Tables() {
		n.table[t] = t.QualifiedName()
		n.one[t] = []string{n.table[t]}[:1:1]
		for _, c := range t.Columns {
			n.col[c] = c.QualifiedName()
		}
	}
	return n
}

// usedColumns appends the writes and searches of a statement.
func (n auditNames) usedColumns(cols []auditlog.Column, uses []rewrite.ColumnUse) []auditlog.Column {
	for _, u := range uses {
		op := auditlog.OpWrite
		if u.Action == rewrite.ActionIndex {
			op = auditlog.OpSearch
		}
		cols = append(cols, auditlog.Column{Name: n.col[u.Column], Op: op})
	}
	return cols
}

// tables appends the names of tables not listed yet.
func (n auditNames) tables(dst []string, tables []*policy.Table) []string {
	if dst == nil && len(tables) == 1 {
		return n.one[tables[0]]
	}
	for _, t := range tables {
		dst = addName(dst, n.table[t])
	}
	return dst
}

func addName(names []string, n string) []string {
	for _, x := range names {
		if x == n {
			return names
		}
	}
	return append(names, n)
}

func kindName(k rewrite.Kind) string {
	switch k {
	case rewrite.KindSelect:
		return "select"
	case rewrite.KindInsert:
		return "insert"
	case rewrite.KindUpdate:
		return "update"
	case rewrite.KindDelete:
		return "delete"
	case rewrite.KindDDL:
		return "ddl"
	case rewrite.KindTransaction:
		return "transaction"
	case rewrite.KindCopy:
		return "copy"
	}
	return "other"
}

// tagRows is the row count of a CommandComplete tag ("SELECT 3",
// "INSERT 0 2", "UPDATE 1"), -1 for a tag without one.
func tagRows(tag []byte) int64 {
	i := bytes.LastIndexByte(tag, ' ')
	if i < 0 || i == len(tag)-1 || len(tag)-i > 19 {
		return -1
	}
	var n int64
	for _, c := range tag[i+1:] {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// errorCode reads the SQLSTATE of an ErrorResponse without decoding the
// rest (its message and detail may hold values).
func errorCode(msg []byte) string {
	b := msg[5:]
	for len(b) > 1 && b[0] != 0 {
		code := b[0]
		v, rest, ok := proxy.CString(b[1:])
		if !ok {
			break
		}
		if code == 'C' {
			return string(v)
		}
		b = rest
	}
	return ""
}
