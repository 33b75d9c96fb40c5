package phi

import (
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/rewrite"
)

// TestRenderMarked: each invalid value becomes the marker that fails
// where PostgreSQL fails on the value, the value itself is never written,
// and the server's error for a marker becomes the proxy's error for the
// value, at the value's position in the client's text.
func TestRenderMarked(t *testing.T) {
	pol, cols := testColumns(t)
	tests := []struct {
		sql   string
		want  string // the text sent, with N for the markers' nonce
		code  string // the client's error for the first marker
		value string // the invalid value, whose position the error names
	}{
		{`UPDATE patients SET date_of_birth = 'nope' WHERE id = 'abc'`,
			`UPDATE patients SET date_of_birth.phiproxy_invalid_N_0 = NULL WHERE id = 'abc'`, "22007", "'nope'"},
		{`UPDATE patients SET date_of_birth = 'nope'::date, id = 'abc'`,
			`UPDATE patients SET date_of_birth = 'phiproxy_invalid_N_0'::pg_catalog.int4, id = 'abc'`, "22007", "'nope'"},
		{`UPDATE patients SET visits = 99999999999`,
			`UPDATE patients SET visits = 'phiproxy_invalid_N_0'::pg_catalog.text::pg_catalog.int4::pg_catalog.text`, "22003", ""},
		{`SELECT id FROM patients WHERE email IN ('a', 'b') AND id = 'x'`,
			`SELECT id FROM patients WHERE email_bidx IN ('IDX-public.patients.email-a', 'IDX-public.patients.email-b') AND id = 'x'`, "", ""},
		{`INSERT INTO patients (id, date_of_birth, email) VALUES (1, 'nope', 'e')`,
			`INSERT INTO patients (id, date_of_birth.phiproxy_invalid_N_0, email, email_bidx) VALUES (1, NULL, 'ENC(public.patients.email:e)', 'IDX-public.patients.email-e')`, "22007", "'nope'"},
		{`INSERT INTO patients (id, email, date_of_birth) VALUES (1, 'a', '2020-01-01'), (2, 'b', 'nope') RETURNING id`,
			`WITH phiproxy_rows_N AS (INSERT INTO patients (id, email, email_bidx, date_of_birth) VALUES (1, 'ENC(public.patients.email:a)', 'IDX-public.patients.email-a', 'ENC(public.patients.date_of_birth:2020-01-01)'), ` +
				`(1, 'ENC(public.patients.email:a)', 'IDX-public.patients.email-a', 'ENC(public.patients.date_of_birth:2020-01-01)')) ` +
				`INSERT INTO patients (id, email, email_bidx, date_of_birth.phiproxy_invalid_N_0) VALUES (2, 'ENC(public.patients.email:b)', 'IDX-public.patients.email-b', NULL), (2, 'ENC(public.patients.email:b)', 'IDX-public.patients.email-b', NULL)`,
			"22007", "'nope'"},
		{`INSERT INTO patients (id, photo) VALUES (1, '\x0')`,
			`INSERT INTO patients (id, photo.phiproxy_invalid_N_0) VALUES (1, NULL)`, "22023", `'\x0'`},
	}
	nonce := regexp.MustCompile(`phiproxy_invalid_[0-9a-f]{16}_`)
	rows := regexp.MustCompile(`phiproxy_rows_[0-9a-f]{16}`)
	for _, tc := range tests {
		plan, err := rewrite.Analyze(tc.sql, pol, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.sql, err)
		}
		w := newWriter(cols, nil)
		got, r, err := w.renderMarked(nil, plan, tc.sql)
		if err != nil {
			t.Fatalf("%s: %v", tc.sql, err)
		}
		s := nonce.ReplaceAllString(string(got), "phiproxy_invalid_N_")
		if s = rows.ReplaceAllString(s, "phiproxy_rows_N"); s != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.sql, s, tc.want)
		}
		if tc.code == "" {
			if r.marks != nil {
				t.Errorf("%s: markers for valid values", tc.sql)
			}
			continue
		}
		if strings.Contains(string(got), "nope") {
			t.Errorf("%s: the invalid value was sent", tc.sql)
		}
		name := nonce.FindString(string(got)) + "0"
		msg, err := (&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42804", Message: `cannot assign to field "` + name + `" of column`, Position: 3}).Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		out, ok := r.marks.errorResponse(nil, msg)
		if !ok {
			t.Fatalf("%s: the marker's error was not recognized", tc.sql)
		}
		var er pgproto3.ErrorResponse
		if err := er.Decode(out[5:]); err != nil {
			t.Fatal(err)
		}
		wantPos := int32(0)
		if tc.value != "" {
			wantPos = charPosition(tc.sql, strings.Index(tc.sql, tc.value))
		}
		if er.Code != tc.code || er.Position != wantPos || strings.Contains(er.Message, name) {
			t.Errorf("%s: client error %s %q at %d, want %s at %d", tc.sql, er.Code, er.Message, er.Position, tc.code, wantPos)
		}
		other, err := (&pgproto3.ErrorResponse{Severity: "ERROR", Code: "22P02", Message: `invalid input syntax for type integer: "abc"`}).Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := r.marks.errorResponse(nil, other); ok {
			t.Errorf("%s: another error taken for the marker's", tc.sql)
		}
	}

	// A value the proxy refuses (its meaning depends on the transaction)
	// is refused as a whole, as before.
	for _, sql := range []string{
		`UPDATE patients SET date_of_birth = 'today'`,
	} {
		plan, err := rewrite.Analyze(sql, pol, nil)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		if len(plan.Literals) == 0 {
			t.Fatalf("%s: no literal", sql)
		}
		if _, _, err := newWriter(cols, nil).renderMarked(nil, plan, sql); err == nil {
			t.Errorf("%s: marked, not refused", sql)
		}
	}
}
