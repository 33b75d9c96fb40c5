package rewrite

// QuoteIdent quotes an identifier for SQL text unless PostgreSQL would
// read it bare as the same name (lower case, not a reserved word), as the
// rewriter does for the names it writes.
func QuoteIdent(s string) string { return quoteIdent(s) }
