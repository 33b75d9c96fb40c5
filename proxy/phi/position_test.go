package phi

import (
	"strings"
	"testing"
)

// TestSentPosition: positions before and after what the proxy rewrote
// are the client's; inside, there is none.
func TestSentPosition(t *testing.T) {
	client := "SELECT é FROM patients WHERE email = 'ä@x' AND zz = 1"
	sent := "SELECT é FROM patients WHERE email_bidx = 'b64hash==' AND zz = 1"
	m := sentPosition{client: client, sent: sent}
	chars := func(s, sub string) int32 {
		i := len([]rune(s[:strings.Index(s, sub)]))
		return int32(i + 1)
	}
	tests := []struct {
		name string
		sent int32
		want int32
	}{
		{"before", chars(sent, "FROM"), chars(client, "FROM")},
		{"after", chars(sent, "zz"), chars(client, "zz")},
		{"end of input", int32(len([]rune(sent)) + 1), int32(len([]rune(client)) + 1)},
		{"inside", chars(sent, "b64hash"), 0},
		{"the first rewritten character", chars(sent, "_bidx"), 0},
		{"none", 0, 0},
	}
	for _, tt := range tests {
		if got := m.position(tt.sent); got != tt.want {
			t.Errorf("%s: position(%d) = %d, want %d", tt.name, tt.sent, got, tt.want)
		}
	}
	// A character that differs only in its last byte is not shared.
	m = sentPosition{client: "SELECT 'é', x", sent: "SELECT 'è', x"}
	if got := m.position(9); got != 0 {
		t.Errorf("position in a changed character = %d, want 0", got)
	}
	if got := m.position(8); got != 8 {
		t.Errorf("position before a changed character = %d, want 8", got)
	}
}

// BenchmarkSentPosition is what an error with a position costs on a
// rewritten statement (statements without one pay nothing).
func BenchmarkSentPosition(b *testing.B) {
	client := "INSERT INTO patients (first_name, last_name, date_of_birth, email, phone, city) VALUES ('fn1', 'ln1', '1980-01-02', 'e1@x.org', '5551', 'city1')"
	sent := ("INSERT INTO patients (first_name, last_name, date_of_birth, email, email_bidx, email_bidx_ci, phone, phone_bidx, phone_bidx_digits, city) VALUES ('" +
		strings.Repeat("phi1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', '", 10) + "x')")
	b.ReportAllocs()
	for b.Loop() {
		sentPosition{client: client, sent: sent}.position(12)
	}
}
