package phi

import (
	"fmt"
	"slices"

	"github.com/novamind/phiproxy/rewrite"
)

// The catalog guard (guard.go) for views over policy tables (views.go).
// A plan made for a decrypting view, and the decryption of its columns,
// rest on its definition as the catalog read saw it; another connection
// may replace it (CREATE OR REPLACE VIEW turning a plain column into an
// expression, or a column that was not PHI into a PHI one), rename it or
// its columns, drop it, or create a new view over a policy table, which
// the session would not know and would pass statements through to,
// values in plaintext. For each decrypting view the guard holds:
//
//	'public.v'::regclass::oid = 16390 AND
//	COALESCE((SELECT r.xmin = '<xmin>' AND <no newer version>
//	          FROM pg_rewrite r WHERE r.ev_class = 16390 AND r.rulename = '_RETURN'), false)
//	... , (NULL::"public"."v").*
//
// The regclass constant makes any DDL on the view invalidate the guard's
// cached plan; the server then looks the name up again, which fails when
// the view was dropped or renamed (42P01), and gives another OID when
// another relation took the name (a view renamed away and another created
// in its place, with the same columns: statements that name the view
// reach that one). The row type fails the guard when a column was added,
// renamed or retyped ("cached plan must not change result type"). A
// definition replaced with the same columns leaves the
// row type alone: the version of the view's _RETURN rule that the
// statement's snapshot sees must be the one the catalog read classified,
// which its xmin names (the transaction that wrote it; a replacement is a
// new version, written by another transaction).
//
// That snapshot may be older than the definition the statement runs with:
// in a REPEATABLE READ or SERIALIZABLE transaction the rewriter expands a
// view from the current catalog, while the guard's query sees the row as
// it was when the transaction's snapshot was taken. The row the snapshot
// sees then has been updated since: its xmax is set, by a transaction that
// committed (or, in the simple protocol where the guard runs before the
// statement takes its locks, that is still in progress). So the row must
// also have no xmax, or one whose transaction aborted (a CREATE OR REPLACE
// VIEW rolled back leaves its xmax behind for good). xmax is 32 bits;
// txid_status takes the 64-bit form, rebuilt from the snapshot's next
// transaction ID nx: every transaction ID in use lies within 2^31 of it
// (wraparound protection), before it or, for one that started after the
// snapshot, after it, so the 32-bit difference, taken as signed, is the
// 64-bit one.

// guardViews returns the guard's conditions and row expansions for the
// decrypting views of cat, in name order.
func guardViews(cat *catalog) (conds, rows []string) {
	if cat == nil {
		return nil, nil
	}
	names := make([]string, 0, len(cat.views))
	for q := range cat.views {
		names = append(names, q)
	}
	slices.Sort(names)
	for _, q := range names {
		v := cat.views[q]
		name := rewrite.QuoteIdent(v.schema) + "." + rewrite.QuoteIdent(v.name)
		conds = append(conds,
			fmt.Sprintf("%s::pg_catalog.regclass::pg_catalog.oid OPERATOR(pg_catalog.=) %d", quoteLiteral(name), v.oid),
			fmt.Sprintf("COALESCE((SELECT r.xmin OPERATOR(pg_catalog.=) %s::pg_catalog.xid AND (r.xmax OPERATOR(pg_catalog.=) '0'::pg_catalog.xid"+
				" OR COALESCE(pg_catalog.txid_status((SELECT s.nx OPERATOR(pg_catalog.+) ((r.xmax::pg_catalog.text::pg_catalog.int8 OPERATOR(pg_catalog.-) (s.nx OPERATOR(pg_catalog.&) 4294967295)"+
				" OPERATOR(pg_catalog.+) 6442450944) OPERATOR(pg_catalog.%%) 4294967296 OPERATOR(pg_catalog.-) 2147483648)"+
				" FROM (SELECT pg_catalog.txid_snapshot_xmax(pg_catalog.txid_current_snapshot()) AS nx) s)) OPERATOR(pg_catalog.=) 'aborted', true))"+
				" FROM pg_catalog.pg_rewrite r WHERE r.ev_class OPERATOR(pg_catalog.=) %d::pg_catalog.oid AND r.rulename OPERATOR(pg_catalog.=) '_RETURN'), false)",
				quoteLiteral(v.xmin), v.oid))
		rows = append(rows, fmt.Sprintf(", (NULL::%s).*", name))
	}
	return conds, rows
}
