// Package differential is phiproxy's differential tester (issue 14): a
// seeded random generator of SQL over the seed schema whose statements run
// through phiproxy on an encrypted database and directly on a plaintext
// twin, and whose answers are compared statement by statement. The rule it
// checks is issue 10's: a statement the proxy accepts returns exactly what
// PostgreSQL returns for the plaintext schema (same rows, same column
// types, same rows affected, same SQLSTATE), or it is refused.
//
// Everything lives in the test files; `make test` runs it with a fixed
// seed, `make differential SEED=… N=…` runs a longer campaign and prints
// the report.
//
// # Setup
//
// Two PostgreSQL clusters (internal/pgcluster, log_statement = all): one
// holds `enc`, the seed schema as phiproxy wants it (ciphertext columns
// with CHECK constraints, blind-index columns) plus phi_types, a table with
// one column of every logical type; the other holds `plain`, the same
// tables in plaintext, and for the self-check a second plaintext copy.
// Keeping the plaintext on its own cluster lets the leak check search
// everything the encrypted cluster wrote for every PHI value sent through
// the proxy. Both databases are loaded by the same INSERT statements,
// compared like any other, so `enc` holds real ciphertext.
//
// # A run
//
// The initial data (load_test.go), then the value probes (probe_test.go:
// every odd and bad value alone, written, compared with =, and inside an =
// ANY array), then N statements of the grammar (grammar_*_test.go), a
// table of productions that -disable switches off one by one. Each
// statement carries tags: the productions it used, refined by the class of
// the column involved (pred.eq.norm: = on a column with a normalizing
// blind index), and the kinds of odd value it sent (val.date.bc).
//
// # One statement
//
// Each statement runs inside its own transaction on both sides: the proxy
// side first, then the plaintext side. A write whose answers agree is
// followed by a read-back of what it may have changed on both sides, so
// that a value stored differently (a BC date stored as AD) is caught where
// it is written. Both transactions commit only when everything agreed;
// otherwise both roll back, so one divergence never cascades. A refusal by
// the proxy (SQLSTATE 0A000, 42601 or 55000 with a "phiproxy" message) is
// counted, not a difference. Rows are compared sorted, as text, binary
// values decoded with their column's type.
//
// # What fails
//
// The self-check, plaintext against plaintext through no proxy, must
// report 0 differences and 0 refusals: it is what keeps the tester honest.
// Through the proxy, a difference fails the test unless the statement
// carries a tag of knownDifferent (known_test.go), the one list of what
// today's proxy gets wrong, each with its issue item; and each listed tag
// must still differ on its own, so the list only shrinks. The leak check
// searches the enc cluster's log and files and the proxy's log for every
// PHI value sent; a value found fails the test unless every statement that
// sent it carries a tag listed as leaking.
//
// # Invariants
//
// The generator draws from math/rand/v2 with a fixed seed and never looks
// at results, so a seed names one statement sequence. Explicit ids are
// always written, so sequences never drift apart. Bounded writes and
// periodic trims keep the tables' sizes, and a statement's cost, steady
// however long the run.
package differential
