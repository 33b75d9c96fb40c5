package rewrite

import (
	pg "github.com/pganalyze/pg_query_go/v6"
)

// SQL cursors. A DECLARE is analyzed as the SELECT it declares (stmt.go):
// its predicates are rewritten, its PHI parameters encrypted or indexed,
// and what a SELECT may not do it may not do either. What the plan adds is
// the cursor's name and options, so the proxy can tell which later
// FETCH, MOVE, CLOSE or Describe of a portal reads it.

// CursorOp is what a statement does with a SQL cursor.
type CursorOp uint8

// Cursor operations.
const (
	CursorDeclare  CursorOp = iota + 1 // DECLARE name CURSOR FOR ...
	CursorFetch                        // FETCH ... name
	CursorMove                         // MOVE ... name
	CursorClose                        // CLOSE name
	CursorCloseAll                     // CLOSE ALL, DISCARD ALL
)

// CursorUse is one statement's use of a SQL cursor.
type CursorUse struct {
	Op CursorOp
	// Name is the cursor's name as the server keys it (an unquoted name
	// folded to lower case); "" for CursorCloseAll.
	Name string
	// Options of a DECLARE. Hold: WITH HOLD, the cursor outlives the
	// transaction that commits it. Binary: FETCH in the simple protocol
	// returns its rows in binary format. Scroll: SCROLL.
	Hold, Binary, Scroll bool
}

// Cursor options of a DeclareCursorStmt (PostgreSQL's parsenodes.h).
const (
	cursorOptBinary = 0x0001
	cursorOptScroll = 0x0002
	cursorOptHold   = 0x0020
)

// cursorUse returns what the top-level statement n does with a cursor, or
// nil.
func cursorUse(n *pg.Node) *CursorUse {
	switch x := n.GetNode().(type) {
	case *pg.Node_DeclareCursorStmt:
		d := x.DeclareCursorStmt
		return &CursorUse{Op: CursorDeclare, Name: d.Portalname,
			Hold: d.Options&cursorOptHold != 0, Binary: d.Options&cursorOptBinary != 0, Scroll: d.Options&cursorOptScroll != 0}
	case *pg.Node_FetchStmt:
		op := CursorFetch
		if x.FetchStmt.Ismove {
			op = CursorMove
		}
		return &CursorUse{Op: op, Name: x.FetchStmt.Portalname}
	case *pg.Node_ClosePortalStmt:
		if x.ClosePortalStmt.Portalname == "" {
			return &CursorUse{Op: CursorCloseAll}
		}
		return &CursorUse{Op: CursorClose, Name: x.ClosePortalStmt.Portalname}
	case *pg.Node_DiscardStmt:
		if x.DiscardStmt.Target == pg.DiscardMode_DISCARD_ALL {
			return &CursorUse{Op: CursorCloseAll}
		}
	}
	return nil
}

// Cursors returns the cursor statements of sql, in text order (one entry
// per DECLARE, FETCH, MOVE, CLOSE or DISCARD ALL; other statements have
// none). The byte scan passes such texts through unparsed when they name no
// policy table, so the proxy asks for them here, for a cursor it knows.
// A text that does not parse has none: the server rejects it.
func Cursors(sql string) ([]CursorUse, error) {
	tree, err := parse(sql)
	if err != nil {
		return nil, err
	}
	var out []CursorUse
	for _, raw := range tree.Stmts {
		if u := cursorUse(raw.Stmt); u != nil {
			out = append(out, *u)
		}
	}
	return out, nil
}
