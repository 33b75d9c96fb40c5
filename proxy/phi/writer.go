package phi

import (
	"fmt"
	"sync/atomic"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/rewrite"
)

// writer encrypts and indexes the values of client messages. It belongs
// to the session's clientToServer goroutine.
type writer struct {
	cols  keyedColumns
	codec *valueCodec
	// Scratch space, reused from message to message.
	plain   []byte      // canonical plaintext of the value at hand
	lit     []byte      // a literal's value, as bytes
	key     []byte      // its equality key, for a blind index
	out     []byte      // a transformed literal
	arena   []byte      // a Bind's transformed values, back to back
	spans   []span      // their places in arena
	pieces  []sentPiece // the parts of a rendered text copied from the plan
	params  [][]byte    // a Bind's new values
	formats []int16     // and format codes
}

func newWriter(cols keyedColumns, nonUTF8 *atomic.Bool) *writer {
	return &writer{cols: cols, codec: newValueCodec(nonUTF8)}
}

// value appends to dst the upstream form of one client value of a PHI
// column: src, of type oid (0: the column's logical type) in the given
// format, stored (assign) or compared; encrypted, or indexed for ix (one of
// col's blind indexes; nil: the exact one).
func (w *writer) value(dst []byte, a rewrite.Action, col *policy.Column, ix *policy.BlindIndex, oid uint32, assign bool, format int16, src []byte) ([]byte, error) {
	pc := w.cols[col]
	if pc == nil {
		return dst, fmt.Errorf("column %s: no keys", col.QualifiedName())
	}
	var err error
	var match bool
	if w.plain, match, err = w.codec.convert(w.plain[:0], col, oid, assign, format, src); err != nil {
		return dst, err
	}
	index := a == rewrite.ActionIndex || a == rewrite.ActionIndexNormalized
	if !match {
		if !index {
			return dst, fmt.Errorf("column %s: a stored value converted to no value", col.QualifiedName())
		}
		// A comparison no stored value satisfies (as on the server).
		return append(dst, noMatchIndex...), nil
	}
	if index {
		w.key = equalityKey(w.key[:0], col.Type, w.plain)
		return pc.transform(dst, a, ix, w.key)
	}
	return pc.transform(dst, a, ix, w.plain)
}

// span is a value's place in a scratch buffer.
type span struct{ i, start, end int }
