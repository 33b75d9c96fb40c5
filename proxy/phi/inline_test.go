package phi

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/novamind/phiproxy/rewrite"
)

// Positions in a text with checks inserted map back to the same
// characters of the client's text, for a passed-through text and for a
// rewritten one whose pieces a check splits.
func TestInsertedPositions(t *testing.T) {
	const check = "SELECT check();"
	client := "SELECT 'é'; SELECT x; SELECT y"
	at := []int{len("SELECT 'é';"), len("SELECT 'é'; SELECT x;")}
	var b strings.Builder
	from := 0
	for _, a := range at {
		b.WriteString(client[from:a])
		b.WriteString(check)
		from = a
	}
	b.WriteString(client[from:])
	sent := b.String()
	pos := func(text, word string) int32 {
		return int32(utf8.RuneCountInString(text[:strings.Index(text, word)]) + 1)
	}

	m := sentPosition{}.inserted(client, client, sent, at, len(check))
	for _, w := range []string{"x;", "y", "'é'"} {
		if got, want := m.position(pos(sent, w)), pos(client, w); got != want {
			t.Errorf("passed through, %q: got %d, want %d", w, got, want)
		}
	}
	if got := m.position(pos(sent, "check")); got != 0 {
		t.Errorf("a position in a check: got %d, want 0", got)
	}

	// Rewritten: the plan's SQL is the client's text; one piece of the
	// sent text copies all of it.
	r := sentPosition{client: client, sent: client, runs: []rewrite.Run{{Len: len(client)}},
		pieces: []sentPiece{{n: len(client)}}}
	r = r.inserted(client, client, sent, at, len(check))
	for _, w := range []string{"x;", "y"} {
		if got, want := r.position(pos(sent, w)), pos(client, w); got != want {
			t.Errorf("rewritten, %q: got %d, want %d", w, got, want)
		}
	}
}

func TestOwnStatements(t *testing.T) {
	r := &result{own: []int{1, 3}} // s0 c s1 c s2
	for n, want := range []bool{false, true, false, true, false, false} {
		if got := r.Own(n); got != want {
			t.Errorf("Own(%d) = %v", n, got)
		}
	}
	if (&result{}).Own(1) {
		t.Error("a text without checks has one")
	}
}
