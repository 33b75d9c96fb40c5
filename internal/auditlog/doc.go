// Package auditlog is phiproxy's audit trail (issue 12): a separate stream
// of JSON lines, one record per statement that reads, writes or searches a
// PHI column and one per refusal, each chained to the one before it by a
// SHA-256 hash, so that a removed or edited line is detected by Verify
// (`phiproxy audit verify`).
//
// The package knows nothing of SQL or PHI: the PHI layer (proxy/phi) fills
// Records with names, counts and codes, never values or SQL text, and Log
// writes them. It lives in internal/ because it is neither the relay core
// nor PHI policy: cmd builds a Log from the `audit:` section (Config) and
// hands it to the PHI layer, and `phiproxy audit verify` uses Verify.
//
// # Record format (version 1)
//
// Each line is one JSON object written by this package's own encoder:
// fields in the fixed order below, no insignificant whitespace, strings
// escaped as encoding/json escapes them (without HTML escaping), absent
// optional fields left out. The same record therefore always encodes to the
// same bytes, and those bytes are the canonical encoding that the chain
// hashes: h(line) = SHA-256 of the line as written, without its newline.
//
//	v            1
//	seq          record number, +1 per record of a process (gaps: see lost)
//	time         RFC 3339 UTC, nanoseconds
//	type         start | statement | refusal | lost
//	conn_id      the session (proxy conn_id, also in the proxy's log)
//	user         the role the client logged in as
//	database     the database of the session
//	client_addr  host:port of the client
//	client_cert  subject of the client's verified TLS certificate, if any
//	statement    select | insert | update | delete | other (its kind)
//	fingerprint  pg_query fingerprint of the SQL text (never the text)
//	stmt_index   0-based position of the statement in a multi-statement text,
//	stmt_count   and the number of statements (both only when more than one)
//	tables       policy tables the statement names
//	columns      [{column: schema.table.column, op: read|write|search,
//	              access: plaintext|masked|denied (reads and denials)}];
//	             a refusal also names the column it concerns, without op
//	             when its use was none of those (a LIKE, an ORDER BY)
//	rows         rows returned or affected (the CommandComplete tag's count)
//	outcome      ok | suspended | error | refused
//	sqlstate     00000, or the code the client got
//	reason       why the proxy refused (a bounded label), or why records were lost
//	seed         (start) 32 random bytes, hex
//	continues    (start) h of the record before this segment: the previous
//	             line of the file, or the last line of the rotated file
//	lost         (start, lost) records that could not be written
//	prev         h of the previous line, hex; a start record's prev is its seed
//
// A file is a sequence of segments, each opened by a start record: when the
// proxy starts, when the file is reopened (SIGHUP, for log rotation) and
// after the sink recovers from a failure. Verify checks that the first line
// of a file is a start record, that every other line's prev is h of the
// line before it, that seq goes up by one, and that a start record in the
// middle of a file continues the line before it; given the rotated files in
// order, it also checks that each file continues the one before.
//
// What the chain cannot show on its own: lines cut from the end of the
// newest file. The proxy logs the chain head (seq and hash) in its own log
// at each reopen and at shutdown; compare Verify's head with the last one
// logged, or ship the file to write-once storage.
//
// # Failure and back-pressure
//
// Write never blocks a session for longer than Config.MaxWait: records go
// into a bounded queue that one writer goroutine drains every
// Config.FlushInterval (or sooner when it fills), encoding, chaining and
// writing them in one write per batch. A full queue past MaxWait, or a sink
// that fails, makes the log failing until the writer has written again
// (it retries the sink every second); with on_failure: refuse (the
// default) Refusing then reports true and the PHI layer refuses statements
// on PHI tables, with on_failure: continue it only counts and logs. Records
// that could not be written are counted in the metrics and in the next
// start or lost record.
package auditlog
