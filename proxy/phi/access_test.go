package phi

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/policy"
)

// accessPolicy is testPolicy with access rules: clinicians read
// plaintext, billing reads masks, intake may only search.
const accessPolicy = `
tables:
  - name: public.patients
    access:
      plaintext: [clinician]
      masked: [billing]
      search: [intake]
    columns:
      email:         { type: text, blind_index: {}, access: { mask: { last: 4 } } }
      date_of_birth: { type: date, access: { mask: year } }
      photo:         { type: bytea, storage: bytea }
      visits:        { type: int4, access: { mask: { replace: "0" } } }
`

var accessRD = &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{
	field("email", 1, 25), field("date_of_birth", 3, 25), field("visits", 5, 25), field("photo", 4, 17),
}}

// accessRow is one stored row of accessRD in text format.
var accessRow = []string{"ENC(public.patients.email:a@x.org)", "ENC(public.patients.date_of_birth:1990-06-15)",
	"ENC(public.patients.visits:7)", `\x` + "524157287075626c69632e70617469656e74732e70686f746f3a01ff29"}

const accessSelect = "SELECT email, date_of_birth, visits, photo FROM patients WHERE id = 6"

// TestAccessPlaintextAndMasked: a plaintext role sees the values; a masked
// role sees each column's mask in the text format and, through a portal,
// in binary, with the logical types either way; the audit records say
// which reads were masked.
func TestAccessPlaintextAndMasked(t *testing.T) {
	t.Run("plaintext", func(t *testing.T) {
		c, _ := scriptedWith(t, scriptOptions{policy: accessPolicy, roles: []string{"clinician"}}, func(f *fakeServer) {
			f.expect("Query " + accessSelect)
			f.rows(accessRD, accessRow)
			f.ready()
		})
		c.send(&pgproto3.Query{String: accessSelect})
		c.expect("RowDescription email:25/0 date_of_birth:1082/0 visits:23/0 photo:17/0",
			`DataRow "a@x.org" "1990-06-15" "7" "\\x01ff"`, "CommandComplete SELECT 1", "ReadyForQuery I")
	})
	t.Run("masked", func(t *testing.T) {
		audit := &fakeAudit{}
		c, _ := scriptedWith(t, scriptOptions{policy: accessPolicy, roles: []string{"billing"}, cfg: Config{Audit: audit}}, func(f *fakeServer) {
			f.expect("Query " + accessSelect)
			f.rows(accessRD, accessRow, []string{"NULL", "NULL", "NULL", "NULL"})
			f.ready()
			f.expect(`Parse "s1" SELECT email, date_of_birth, visits, photo FROM patients WHERE id = $1…`, `Describe S "s1"`, "Sync")
			f.send(&pgproto3.ParseComplete{}, &pgproto3.ParameterDescription{ParameterOIDs: []uint32{23}}, accessRD)
			f.ready()
			f.expect(`Bind "" "s1"…`, `Execute ""`, "Sync")
			f.send(&pgproto3.BindComplete{}, &pgproto3.DataRow{Values: [][]byte{
				[]byte(accessRow[0]), []byte(accessRow[1]), []byte(accessRow[2]), []byte("RAW(public.patients.photo:\x01\xff)")}})
			f.send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
			f.ready()
		})
		c.send(&pgproto3.Query{String: accessSelect})
		c.expect("RowDescription email:25/0 date_of_birth:1082/0 visits:23/0 photo:17/0",
			`DataRow "****.org" "1990-01-01" "0" NULL`, `DataRow NULL NULL NULL NULL`, "CommandComplete SELECT 2", "ReadyForQuery I")
		c.send(&pgproto3.Parse{Name: "s1", Query: "SELECT email, date_of_birth, visits, photo FROM patients WHERE id = $1"},
			&pgproto3.Describe{ObjectType: 'S', Name: "s1"}, &pgproto3.Sync{})
		c.expect("ParseComplete", "ParameterDescription [23]", "RowDescription email:25/0 date_of_birth:1082/0 visits:23/0 photo:17/0", "ReadyForQuery I")
		c.send(&pgproto3.Bind{PreparedStatement: "s1", Parameters: [][]byte{[]byte("6")}, ResultFormatCodes: []int16{1}},
			&pgproto3.Execute{}, &pgproto3.Sync{})
		// Binary: text is its bytes; 1990-01-01 is 3652 days before 2000-01-01.
		c.expect("BindComplete", `DataRow "****.org" "\xff\xff\xf1\xbc" "\x00\x00\x00\x00" NULL`, "CommandComplete SELECT 1", "ReadyForQuery I")
		c.send(&pgproto3.Terminate{})
		want := []string{
			"statement select [public.patients] [email:read:masked date_of_birth:read:masked visits:read:masked photo:read:masked] rows=2 ok 00000",
			"statement select [public.patients] [email:read:masked date_of_birth:read:masked visits:read:masked photo:read:masked] rows=1 ok 00000",
		}
		if d := cmp.Diff(want, audit.lines(t)); d != "" {
			t.Errorf("records (-want +got):\n%s", d)
		}
	})
}

// TestAccessDeniedAndSearch: a role that may only search finds rows by a
// column it cannot read; the column in its result is refused (a simple
// Query's when described, a prepared statement's at Bind, a RETURNING
// before it runs); a role without the search right cannot search.
func TestAccessDeniedAndSearch(t *testing.T) {
	audit := &fakeAudit{}
	raise := func(f *fakeServer) {
		f.expect("Query DO $phiproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '42501'…")
		f.send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42501", Message: "phiproxy: permission denied"})
		f.ready()
	}
	c, _ := scriptedWith(t, scriptOptions{policy: accessPolicy, roles: []string{"intake"}, cfg: Config{Audit: audit}}, func(f *fakeServer) {
		f.expect("Query SELECT id FROM patients WHERE email_bidx = 'IDX-public.patients.email-a@x.org'")
		f.rows(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("id", 6, 23)}}, []string{"6"})
		f.ready()
		f.expect("Query SELECT id, email FROM patients WHERE id = 6")
		f.rows(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("id", 6, 23), field("email", 1, 25)}},
			[]string{"6", "ENC(public.patients.email:a@x.org)"})
		f.ready()
		f.expect(`Parse "s2" SELECT id, email FROM patients WHERE id = $1…`, `Describe S "s2"`, "Sync")
		f.send(&pgproto3.ParseComplete{}, &pgproto3.ParameterDescription{ParameterOIDs: []uint32{23}},
			&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("id", 6, 23), field("email", 1, 25)}})
		f.ready()
		f.expect(`Close S "phiproxy_raise"`, `Parse "phiproxy_raise" DO $phiproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '42501'…`,
			`Bind "" "phiproxy_raise" [] [] []`, `Execute ""`, "Sync")
		f.send(&pgproto3.CloseComplete{}, &pgproto3.ParseComplete{}, &pgproto3.BindComplete{},
			&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42501", Message: "phiproxy: permission denied"})
		f.ready()
		raise(f) // RETURNING
	})
	c.send(&pgproto3.Query{String: "SELECT id FROM patients WHERE email = 'a@x.org'"})
	c.expect("RowDescription id:23/0", `DataRow "6"`, "CommandComplete SELECT 1", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "SELECT id, email FROM patients WHERE id = 6"})
	c.expect("ErrorResponse ERROR 42501 phiproxy: permission denied for column email of table public.patients", "ReadyForQuery I")
	c.send(&pgproto3.Parse{Name: "s2", Query: "SELECT id, email FROM patients WHERE id = $1"},
		&pgproto3.Describe{ObjectType: 'S', Name: "s2"}, &pgproto3.Sync{})
	c.expect("ParseComplete", "ParameterDescription [23]", "RowDescription id:23/0 email:25/0", "ReadyForQuery I")
	c.send(&pgproto3.Bind{PreparedStatement: "s2", Parameters: [][]byte{[]byte("6")}}, &pgproto3.Execute{}, &pgproto3.Sync{})
	c.expect("ErrorResponse ERROR 42501 phiproxy: permission denied", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "UPDATE patients SET visits = 1 WHERE id = 1 RETURNING email"})
	c.expect("ErrorResponse ERROR 42501 phiproxy: permission denied", "ReadyForQuery I")
	c.send(&pgproto3.Terminate{})
	want := []string{
		"statement select [public.patients] [email:search] rows=1 ok 00000",
		"refusal select [public.patients] [email:read:denied] rows=-1 refused 42501 permission",
		"refusal select [public.patients] [email:read:denied] rows=-1 refused 42501 permission",
		"refusal update [public.patients] [visits:write email:read:denied] rows=-1 refused 42501 permission",
	}
	if d := cmp.Diff(want, audit.lines(t)); d != "" {
		t.Errorf("records (-want +got):\n%s", d)
	}

	// A masked role without the search right, and a role the rule does
	// not name, cannot search.
	for _, role := range []string{"billing", "someone"} {
		t.Run(role, func(t *testing.T) {
			c, _ := scriptedWith(t, scriptOptions{policy: accessPolicy, roles: []string{role}}, raise)
			c.send(&pgproto3.Query{String: "SELECT id FROM patients WHERE email = 'a@x.org'"})
			c.expect("ErrorResponse ERROR 42501 phiproxy: permission denied", "ReadyForQuery I")
		})
	}
}

func TestMaskValues(t *testing.T) {
	for _, tt := range []struct {
		in   string
		typ  policy.LogicalType
		want string
		ok   bool
	}{
		{"1987-06-05", policy.TypeDate, "1987-01-01", true},
		{"0044-03-15 BC", policy.TypeDate, "0044-01-01 BC", true},
		{"infinity", policy.TypeDate, "infinity", true},
		{"12345-02-03", policy.TypeDate, "12345-01-01", true},
		{"2024-02-29 11:14:15.123456Z", policy.TypeTimestamptz, "2024-01-01 00:00:00Z", true},
		{"0044-03-15 10:00:00Z BC", policy.TypeTimestamptz, "0044-01-01 00:00:00Z BC", true},
		{"-infinity", policy.TypeTimestamptz, "-infinity", true},
		{"05/06/1987", policy.TypeDate, "", false},
	} {
		got, ok := maskYear(nil, []byte(tt.in), tt.typ)
		if string(got) != tt.want || ok != tt.ok {
			t.Errorf("maskYear(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
	for _, tt := range []struct {
		in   string
		n    int
		want string
	}{
		{"123-45-6789", 4, "****6789"},
		{"6789", 4, "****"},
		{"", 4, "****"},
		{"héllo wörld", 3, "****rld"},
		{"日本語テキスト", 2, "****スト"},
	} {
		if got := string(maskLast(nil, []byte(tt.in), tt.n, []byte("****"))); got != tt.want {
			t.Errorf("maskLast(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}
