package phi

import "github.com/jackc/pgerrcode"

// A simple Query inside the client's own open extended batch (after
// Parse, Bind or Execute, before their Sync) cannot have the proxy's
// extended-protocol messages in front of it: the guard (guard.go), or the
// Parse and Describe of a COPY's query (copy.go). When one of them fails
// (the catalog changed, the COPY's query does not parse) the server
// skips everything up to the client's Sync, the Query and the messages
// after it alike: one error and one ReadyForQuery, where PostgreSQL,
// failing the Query itself, answers the Query with its error and
// ReadyForQuery, runs what follows and answers the Sync too. A client
// waiting for the Query's ReadyForQuery takes the Sync's for it and the
// session goes out of step. No Sync of the proxy's can follow the Query
// either: when an earlier message of the batch failed, the server skips
// the Query, and that Sync would answer it (and end the skipping). So
// such a Query is refused; the raise is itself a Query, which the server
// skips after an earlier error as it would skip the client's.

// errQueryInBatch refuses a simple Query that needs the proxy's messages
// in front of it inside an open extended batch.
var errQueryInBatch error = &refusal{pgerrcode.FeatureNotSupported, "unsupported",
	"a simple Query on PHI tables inside an unfinished extended-protocol batch (after Parse, Bind or Execute and before Sync) cannot be checked against the catalog: send Sync first"}

// queryInBatch refuses a simple Query that needs the guard (unless one
// went out in this batch after its last Parse, Bind and Execute) or a
// description of its COPY query while the client's extended batch is open.
// clientToServer.
func (s *session) queryInBatch(guard, describe bool) error {
	if !s.openBatch {
		return nil
	}
	if describe || guard && !s.guarded && !s.eng.noGuard {
		return errQueryInBatch
	}
	return nil
}
