package phi

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/rewrite"
)

// fakeKeys "encrypts" by tagging the plaintext with the column, and indexes
// by tagging it with the group: transparent, so tests can read what the
// proxy sent. The real cryptography has its own tests in crypto/.
type fakeKeys struct{}

type fakeCipher struct{ ad string }

func (c fakeCipher) Seal(dst, p []byte) ([]byte, error) {
	return append(append(append(dst, "RAW("...), c.ad+":"...), append(p, ')')...), nil
}
func (c fakeCipher) SealText(dst, p []byte) ([]byte, error) {
	return append(append(append(dst, "ENC("...), c.ad+":"...), append(p, ')')...), nil
}
func (c fakeCipher) Open(dst, env []byte) ([]byte, error) {
	for _, prefix := range []string{"ENC(", "RAW("} {
		p := prefix + c.ad + ":"
		if bytes.HasPrefix(env, []byte(p)) && bytes.HasSuffix(env, []byte(")")) {
			return append(dst, env[len(p):len(env)-1]...), nil
		}
	}
	return dst, errors.New("decryption failed")
}

// fakeIndexer marks the index text with its group and kind: IDX-<group>-
// for an index keyed by the group alone, NIDX-<group>- for a normalized
// index; the normalizers are a lower-casing trim whatever the policy says.
type fakeIndexer struct{ prefix string }

func (x fakeIndexer) AppendText(dst, v []byte) []byte {
	return append(append(dst, x.prefix...), bytes.ToLower(bytes.TrimSpace(v))...)
}

func (x fakeIndexer) AppendNormalizedText(dst, v []byte) []byte {
	return append(append(dst, x.prefix+"as-is-"...), v...)
}

func (fakeKeys) ColumnCipher(ad string) (ColumnCipher, error) { return fakeCipher{ad}, nil }
func (fakeKeys) BlindIndexer(group string, _ []string, _ int) (BlindIndexer, error) {
	return fakeIndexer{"IDX-" + group + "-"}, nil
}
func (fakeKeys) NormalizedIndexer(group string, _ []string, _ int) (BlindIndexer, error) {
	return fakeIndexer{"NIDX-" + group + "-"}, nil
}

const testPolicy = `
tables:
  - name: public.patients
    columns:
      email:         { type: text, blind_index: {} }
      date_of_birth: { type: date }
      photo:         { type: bytea, storage: bytea }
      visits:        { type: int4 }
`

func testColumns(t *testing.T) (*policy.Policy, keyedColumns) {
	t.Helper()
	pol, err := policy.Parse([]byte(testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	cols, err := newKeyedColumns(pol, fakeKeys{})
	if err != nil {
		t.Fatal(err)
	}
	return pol, cols
}

func TestRenderQuery(t *testing.T) {
	pol, cols := testColumns(t)
	tab := pol.Table("public", "patients")
	email, dob, photo := tab.Column("email"), tab.Column("date_of_birth"), tab.Column("photo")
	sql := "INSERT INTO patients (email, email_bidx, date_of_birth, photo) VALUES ('x', 'x', 'x', 'x')"
	at := func(n int) int { // the n-th 'x'
		i := -1
		for ; n >= 0; n-- {
			i += 1 + strings.Index(sql[i+1:], "'x'")
		}
		return i
	}
	plan := &rewrite.Plan{SQL: sql, Literals: []rewrite.Literal{
		{Start: at(0), End: at(0) + 3, Value: " Ann@X.org", Action: rewrite.ActionEncrypt, Column: email},
		{Start: at(1), End: at(1) + 3, Value: " Ann@X.org", Action: rewrite.ActionIndex, Column: email},
		{Start: at(2), End: at(2) + 3, Value: "1990-01-02", Action: rewrite.ActionEncrypt, Column: dob},
		{Start: at(3), End: at(3) + 3, Value: `\x0001`, Action: rewrite.ActionEncrypt, Column: photo},
	}}
	w := newWriter(cols, nil)
	got, err := w.renderQuery(nil, plan)
	if err != nil {
		t.Fatal(err)
	}
	want := "INSERT INTO patients (email, email_bidx, date_of_birth, photo) VALUES (" +
		"'ENC(public.patients.email: Ann@X.org)', 'IDX-public.patients.email-ann@x.org', " +
		"'ENC(public.patients.date_of_birth:1990-01-02)', decode('UkFXKHB1YmxpYy5wYXRpZW50cy5waG90bzoAASk=', 'base64'))"
	if string(got) != want {
		t.Fatalf("renderQuery:\n got %s\nwant %s", got, want)
	}

	bad := &rewrite.Plan{SQL: "x", Literals: []rewrite.Literal{{Start: 0, End: 1, Value: "nope", Action: rewrite.ActionEncrypt, Column: dob}}}
	if _, err := w.renderQuery(nil, bad); !errors.As(err, new(*ValueError)) {
		t.Fatalf("bad date literal: err = %v, want ValueError", err)
	}
	if strings.Contains(err2str(w.renderQuery(nil, bad)), "nope") {
		t.Fatal("error message contains the value")
	}
}

func err2str(_ []byte, err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestRewriteBind(t *testing.T) {
	pol, cols := testColumns(t)
	tab := pol.Table("public", "patients")
	email, dob, photo := tab.Column("email"), tab.Column("date_of_birth"), tab.Column("photo")
	plan := &rewrite.Plan{ClientParams: 4, Params: []rewrite.Param{
		{Source: 0, Action: rewrite.ActionEncrypt, Column: email},
		{Source: 1, Action: rewrite.ActionEncrypt, Column: dob},
		{Source: 2, Action: rewrite.ActionEncrypt, Column: photo},
		{Source: 3},
		{Source: 0, Action: rewrite.ActionIndex, Column: email},
	}}
	dobBin, _ := pgtype.NewMap().Encode(pgtype.DateOID, formatBinary, pgtype.Date{Time: mustDate(t, "1990-01-02"), Valid: true}, nil)
	b := &pgproto3.Bind{
		ParameterFormatCodes: []int16{0, 1, 1, 1},
		Parameters:           [][]byte{[]byte("Ann@X.org "), dobBin, {0, 1}, {0, 0, 0, 7}},
		ResultFormatCodes:    []int16{1},
	}
	w := newWriter(cols, nil)
	if err := w.rewriteBind(b, plan, nil); err != nil {
		t.Fatal(err)
	}
	want := []string{"ENC(public.patients.email:Ann@X.org )", "ENC(public.patients.date_of_birth:1990-01-02)",
		"RAW(public.patients.photo:\x00\x01)", "\x00\x00\x00\x07", "IDX-public.patients.email-ann@x.org"}
	for i, w := range want {
		if string(b.Parameters[i]) != w {
			t.Errorf("param %d = %q, want %q", i+1, b.Parameters[i], w)
		}
	}
	if got := b.ParameterFormatCodes; !slices.Equal(got, []int16{0, 0, 1, 1, 0}) {
		t.Errorf("format codes = %v", got)
	}
	if !slices.Equal(b.ResultFormatCodes, []int16{1}) {
		t.Errorf("result formats changed: %v", b.ResultFormatCodes)
	}

	// NULL stays NULL, in both the value and its index.
	b = &pgproto3.Bind{Parameters: [][]byte{nil, nil, nil, nil}}
	if err := w.rewriteBind(b, plan, nil); err != nil {
		t.Fatal(err)
	}
	for i, p := range b.Parameters {
		if p != nil {
			t.Errorf("param %d = %q, want NULL", i+1, p)
		}
	}

	var pe *ParamCountError
	if err := w.rewriteBind(&pgproto3.Bind{Parameters: [][]byte{nil}}, plan, nil); !errors.As(err, &pe) || pe.Got != 1 || pe.Want != 4 {
		t.Fatalf("short bind: %v", err)
	}
}

func TestRewriteBindArray(t *testing.T) {
	pol, cols := testColumns(t)
	email := pol.Table("public", "patients").Column("email")
	plan := &rewrite.Plan{ClientParams: 1, Params: []rewrite.Param{{Source: 0, Action: rewrite.ActionIndex, Column: email, Array: true}}}
	m := pgtype.NewMap()
	binArr, err := m.Encode(pgtype.TextArrayOID, formatBinary, []*string{ptr("A@x"), nil, ptr(" b@y")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		format int16
		v      []byte
	}{"text": {formatText, []byte(`{"A@x",NULL," b@y"}`)}, "binary": {formatBinary, binArr}} {
		t.Run(name, func(t *testing.T) {
			b := &pgproto3.Bind{ParameterFormatCodes: []int16{tc.format}, Parameters: [][]byte{tc.v}}
			if err := newWriter(cols, nil).rewriteBind(b, plan, nil); err != nil {
				t.Fatal(err)
			}
			want := `{"IDX-public.patients.email-a@x",NULL,"IDX-public.patients.email-b@y"}`
			if string(b.Parameters[0]) != want || b.ParameterFormatCodes[0] != formatText {
				t.Fatalf("got %q format %d, want %q text", b.Parameters[0], b.ParameterFormatCodes[0], want)
			}
		})
	}
}

func TestResultTransform(t *testing.T) {
	pol, cols := testColumns(t)
	const oid = 16384
	rows := [][][]byte{
		{[]byte("16384"), []byte("public"), []byte("patients"), []byte("1"), []byte("id"), []byte("23")},
		{[]byte("16384"), []byte("public"), []byte("patients"), []byte("2"), []byte("email"), []byte("25")},
		{[]byte("16384"), []byte("public"), []byte("patients"), []byte("3"), []byte("email_bidx"), []byte("25")},
		{[]byte("16384"), []byte("public"), []byte("patients"), []byte("4"), []byte("date_of_birth"), []byte("25")},
		{[]byte("16384"), []byte("public"), []byte("patients"), []byte("5"), []byte("photo"), []byte("17")},
		{[]byte("16384"), []byte("public"), []byte("patients"), []byte("6"), []byte("visits"), []byte("25")},
	}
	cat, err := buildCatalog(pol, rows)
	if err != nil {
		t.Fatal(err)
	}
	if p := cat.problem(pol.Table("public", "patients")); p != "" {
		t.Fatalf("problem: %s", p)
	}
	if c, ok := cat.Columns("public", "patients"); !ok || strings.Join(c, ",") != "id,email,email_bidx,date_of_birth,photo,visits" {
		t.Fatalf("Columns = %v %v", c, ok)
	}
	rd := &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{
		{Name: []byte("id"), TableOID: oid, TableAttributeNumber: 1, DataTypeOID: pgtype.Int4OID, DataTypeSize: 4},
		{Name: []byte("e"), TableOID: oid, TableAttributeNumber: 2, DataTypeOID: pgtype.TextOID, DataTypeSize: -1},
		{Name: []byte("email_bidx"), TableOID: oid, TableAttributeNumber: 3, DataTypeOID: pgtype.TextOID, DataTypeSize: -1},
		{Name: []byte("d"), TableOID: oid, TableAttributeNumber: 4, DataTypeOID: pgtype.TextOID, DataTypeSize: -1},
		{Name: []byte("p"), TableOID: oid, TableAttributeNumber: 5, DataTypeOID: pgtype.ByteaOID, DataTypeSize: -1},
		{Name: []byte("v"), TableOID: oid, TableAttributeNumber: 6, DataTypeOID: pgtype.TextOID, DataTypeSize: -1},
		{Name: []byte("other"), TableOID: 99, TableAttributeNumber: 2, DataTypeOID: pgtype.TextOID, DataTypeSize: -1},
	}}
	// The client's per-column codes count the columns it sees: the hidden
	// blind-index column gets text.
	formats := newResultTransform(cat, cols, rd, nil).resultFormats([]int16{0, 1, 1, 0, 1, 0})
	if want := []int16{0, 1, 0, 1, 0, 1, 0}; !slices.Equal(formats, want) {
		t.Fatalf("server result formats = %v, want %v", formats, want)
	}
	tr := newResultTransform(cat, cols, rd, formats)
	if tr == nil {
		t.Fatal("no transform")
	}
	tr.rowDescription(rd)
	gotTypes := []uint32{}
	for _, f := range rd.Fields {
		gotTypes = append(gotTypes, f.DataTypeOID)
	}
	if want := []uint32{pgtype.Int4OID, pgtype.TextOID, pgtype.DateOID, pgtype.ByteaOID, pgtype.Int4OID, pgtype.TextOID}; !slices.Equal(gotTypes, want) {
		t.Fatalf("types = %v, want %v", gotTypes, want)
	}
	row := &pgproto3.DataRow{Values: [][]byte{
		[]byte("\x00\x00\x00\x01"),
		[]byte("ENC(public.patients.email:Ann)"),
		[]byte("IDX-public.patients.email-ann"),
		[]byte("ENC(public.patients.date_of_birth:1990-01-02)"),
		nil,
		[]byte("ENC(public.patients.visits:12)"),
		[]byte("ENC(public.patients.email:not ours)"),
	}}
	r := newReader(nil, isoUTC())
	if err := r.dataRow(tr, row); err != nil {
		t.Fatal(err)
	}
	want := []string{"\x00\x00\x00\x01", "Ann", "\xff\xff\xf1\xbd", "", "\x00\x00\x00\x0c", "ENC(public.patients.email:not ours)"}
	for i, w := range want {
		if string(row.Values[i]) != w {
			t.Errorf("value %d = %q, want %q", i, row.Values[i], w)
		}
	}
	if row.Values[3] != nil {
		t.Error("NULL did not stay NULL")
	}

	// bytea storage read in text format: hex of the raw envelope.
	rd2 := &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{TableOID: oid, TableAttributeNumber: 5, Format: 0}}}
	tr2 := newResultTransform(cat, cols, rd2, nil)
	env, _ := fakeCipher{"public.patients.photo"}.Seal(nil, []byte{0xca, 0xfe})
	row2 := &pgproto3.DataRow{Values: [][]byte{append([]byte(`\x`), hex.EncodeToString(env)...)}}
	if err := r.dataRow(tr2, row2); err != nil || string(row2.Values[0]) != `\xcafe` {
		t.Fatalf("bytea text: %q %v", row2.Values[0], err)
	}

	// A tampered value fails with the column's name and without the value.
	row3 := &pgproto3.DataRow{Values: [][]byte{nil, []byte("secret-plaintext"), nil, nil, nil, nil, nil}}
	err = r.dataRow(tr, row3)
	var de *unreadableError
	if !errors.As(err, &de) || de.Column != "public.patients.email" || strings.Contains(err.Error(), "secret") {
		t.Fatalf("tampered: %v", err)
	}
}

// TestCatalogProblems: the problems that refuse statements on a table are
// policy.DiffTable's Blocks problems, with the message and DDL `phiproxy
// schema` prints, read from full catalog rows (type names, generation).
func TestCatalogProblems(t *testing.T) {
	pol, _ := testColumns(t)
	row := func(attnum, name, typ, typeName, generated string) [][]byte {
		r := [][]byte{[]byte("7"), []byte("public"), []byte("patients"), []byte(attnum), []byte(name), []byte(typ)}
		return append(r, []byte("f"), []byte("f"), []byte("f"), []byte(typeName), []byte(generated))
	}
	rows := [][][]byte{
		row("1", "email", "25", "text", "false"),
		row("2", "date_of_birth", "1082", "date", "false"),
		row("3", "photo", "17", "bytea", "true"),
	}
	cat, err := buildCatalog(pol, rows)
	if err != nil {
		t.Fatal(err)
	}
	p := cat.problem(pol.Table("public", "patients"))
	want := []string{
		"blind-index column email_bidx of email is missing: ALTER TABLE public.patients ADD COLUMN email_bidx text; CREATE INDEX CONCURRENTLY patients_email_bidx_idx ON public.patients (email_bidx);",
		"PHI column date_of_birth has type date; phiproxy stores text ciphertext; the cast keeps its text form for `phiproxy migrate encrypt`: ALTER TABLE public.patients ALTER COLUMN date_of_birth TYPE text USING date_of_birth::text;",
		"PHI column photo is generated: PostgreSQL would compute it from plaintext: ALTER TABLE public.patients ALTER COLUMN photo DROP EXPRESSION;",
		"PHI column visits is missing: ALTER TABLE public.patients ADD COLUMN visits text;",
	}
	if d := cmp.Diff(strings.Join(want, " "), p); d != "" {
		t.Errorf("problems (-want +got):\n%s", d)
	}
	// The same as DiffTable's, which `phiproxy schema` prints.
	live := &policy.LiveTable{Schema: "public", Name: "patients", Kind: "r", Columns: []policy.LiveColumn{
		{Name: "email", Attnum: 1, Type: "text", TypeOID: 25},
		{Name: "date_of_birth", Attnum: 2, Type: "date", TypeOID: 1082},
		{Name: "photo", Attnum: 3, Type: "bytea", TypeOID: 17, Generated: true},
	}}
	var fromDiff []string
	for _, dp := range policy.DiffTable(pol.Table("public", "patients"), live) {
		if dp.Blocks {
			fromDiff = append(fromDiff, dp.Msg+": "+strings.Join(dp.DDL, " "))
		}
	}
	if d := cmp.Diff(want, fromDiff); d != "" {
		t.Errorf("DiffTable's Blocks problems (-want +got):\n%s", d)
	}
	if a, ok := cat.lookup(7, 3); ok {
		t.Errorf("a generated PHI column is decrypted in results: %+v", a)
	}
	if q := catalogQuery(pol, true); !strings.Contains(q, "(E'public', E'patients')") {
		t.Errorf("catalog query: %s", q)
	}
}

func BenchmarkDataRowDecrypt(b *testing.B) {
	pol, err := policy.Parse([]byte(testPolicy))
	if err != nil {
		b.Fatal(err)
	}
	cols, _ := newKeyedColumns(pol, fakeKeys{})
	cat, _ := buildCatalog(pol, [][][]byte{{[]byte("7"), []byte("public"), []byte("patients"), []byte("1"), []byte("email"), []byte("25")}})
	rd := &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{TableOID: 7, TableAttributeNumber: 1}, {TableOID: 7, TableAttributeNumber: 9}}}
	tr := newResultTransform(cat, cols, rd, nil)
	r := newReader(nil, isoUTC())
	env := []byte("ENC(public.patients.email:someone@example.org)")
	row := &pgproto3.DataRow{Values: make([][]byte, 2)}
	b.ReportAllocs()
	for b.Loop() {
		row.Values[0], row.Values[1] = env, []byte("x")
		if err := r.dataRow(tr, row); err != nil {
			b.Fatal(err)
		}
	}
}

func mustDate(t *testing.T, s string) time.Time {
	t.Helper()
	var d pgtype.Date
	if err := d.Scan(s); err != nil {
		t.Fatal(err)
	}
	return d.Time
}

func ptr[T any](v T) *T { return &v }

func TestPHIMetrics(t *testing.T) {
	pol, err := policy.Parse([]byte(testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	eng, err := New(pol, fakeKeys{}, reg, Config{})
	if err != nil {
		t.Fatal(err)
	}
	var rows [][][]byte
	for i, c := range []string{"email:25", "email_bidx:25", "date_of_birth:25", "photo:17", "visits:25"} {
		name, typ, _ := strings.Cut(c, ":")
		rows = append(rows, [][]byte{[]byte("7"), []byte("public"), []byte("patients"), []byte(fmt.Sprint(i + 1)), []byte(name), []byte(typ)})
	}
	st, err := eng.state(rows)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := st.plan("SELECT email FROM patients WHERE email = $1", false, rewrite.LexOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.plan("SELECT 1", false, rewrite.LexOptions{}); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	want := `
# HELP phiproxy_plan_cache_hits_total Statements whose plan was found in the plan cache.
# TYPE phiproxy_plan_cache_hits_total counter
phiproxy_plan_cache_hits_total 2
# HELP phiproxy_plan_cache_misses_total Statements parsed and analyzed because their plan was not cached.
# TYPE phiproxy_plan_cache_misses_total counter
phiproxy_plan_cache_misses_total 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "phiproxy_plan_cache_hits_total", "phiproxy_plan_cache_misses_total"); err != nil {
		t.Fatal(err)
	}
	// A second catalog (another database) keeps counting in the same totals.
	st2, err := eng.state(nil)
	if err != nil {
		t.Fatal(err)
	}
	st2.plan("SELECT email FROM patients WHERE email = $1", false, rewrite.LexOptions{})
	if got := testutil.ToFloat64(eng.metrics.statements.WithLabelValues("passthrough")); got != 0 {
		t.Errorf("statements counted by plan(): %v", got)
	}
	if s := eng.cacheStats(); s.Misses != 2 || s.Hits != 2 {
		t.Errorf("cache stats over two catalogs = %+v", s)
	}

	// Values are counted per column and operation.
	email := eng.cols[pol.Table("public", "patients").Column("email")]
	email.transform(nil, rewrite.ActionEncrypt, nil, []byte("a"))
	email.transform(nil, rewrite.ActionIndex, nil, []byte("a"))
	email.transform(nil, rewrite.ActionIndex, nil, []byte("b"))
	for op, want := range map[string]float64{"encrypt": 1, "index": 2, "decrypt": 0} {
		if got := testutil.ToFloat64(eng.metrics.values.WithLabelValues("public.patients", "email", op)); got != want {
			t.Errorf("%s count = %v, want %v", op, got, want)
		}
	}
}

func TestBindResultFormats(t *testing.T) {
	for _, b := range []*pgproto3.Bind{
		{},
		{DestinationPortal: "p", PreparedStatement: "s", ParameterFormatCodes: []int16{1, 0},
			Parameters: [][]byte{[]byte("abc"), nil}, ResultFormatCodes: []int16{1, 0, 1}},
		{Parameters: [][]byte{{}}, ResultFormatCodes: []int16{1}},
	} {
		msg, err := b.Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := bindResultFormats(msg)
		if err != nil || !slices.Equal(got, b.ResultFormatCodes) {
			t.Errorf("%+v: got %v %v", b, got, err)
		}
		for cut := 5; cut < len(msg); cut++ {
			if _, err := bindResultFormats(msg[:cut]); err == nil && cut < len(msg) {
				t.Errorf("%+v cut at %d: no error", b, cut)
			}
		}
	}
}

// BenchmarkRewriteBind measures the per-statement work of a prepared
// INSERT with real cryptography: 4 values encrypted, 1 also indexed.
func BenchmarkRewriteBind(b *testing.B) {
	pol, err := policy.Parse([]byte(testPolicy))
	if err != nil {
		b.Fatal(err)
	}
	master := make([]byte, 32)
	prov, err := crypto.NewLocalProvider(master)
	if err != nil {
		b.Fatal(err)
	}
	kr, err := crypto.CreateKeyring(context.Background(), b.TempDir()+"/keyring.json", prov)
	if err != nil {
		b.Fatal(err)
	}
	cols, err := newKeyedColumns(pol, KeyringKeys(kr))
	if err != nil {
		b.Fatal(err)
	}
	tab := pol.Table("public", "patients")
	plan := &rewrite.Plan{ClientParams: 4, Params: []rewrite.Param{
		{Source: 0, Action: rewrite.ActionEncrypt, Column: tab.Column("email")},
		{Source: 1, Action: rewrite.ActionEncrypt, Column: tab.Column("date_of_birth")},
		{Source: 2, Action: rewrite.ActionEncrypt, Column: tab.Column("photo")},
		{Source: 3, Action: rewrite.ActionEncrypt, Column: tab.Column("visits")},
		{Source: 0, Action: rewrite.ActionIndex, Column: tab.Column("email")},
	}}
	params := [][]byte{[]byte(" Someone@Example.org"), []byte("1990-01-02"), []byte("\\x0001"), []byte("12")}
	w := newWriter(cols, nil)
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		bind := pgproto3.Bind{Parameters: params}
		if err := w.rewriteBind(&bind, plan, nil); err != nil {
			b.Fatal(err)
		}
		if buf, err = bind.Encode(buf[:0]); err != nil {
			b.Fatal(err)
		}
	}
}

// TestStatementChainsCut: statements parsed one after another under one
// name do not stay reachable once the server answered them.
func TestStatementChainsCut(t *testing.T) {
	ps := &session{statements: map[string]*statement{}}
	plan := &rewrite.Plan{Passthrough: true}
	for range 1000 {
		st := &statement{plan: plan, prev: ps.lookup("")}
		ps.statements[""] = st
		st.state.Store(stmtCreated) // ParseComplete
	}
	n := 0
	for st := ps.statements[""]; st != nil; st = st.prev {
		n++
	}
	if n > 2 {
		t.Fatalf("chain of %d statements kept", n)
	}
	// A skipped Parse falls back to the one before it.
	old := ps.lookup("")
	skipped := &statement{plan: &rewrite.Plan{}, prev: old}
	ps.statements[""] = skipped
	skipped.state.Store(stmtSkipped)
	if ps.lookup("") != old {
		t.Fatal("a skipped unnamed Parse did not fall back to the statement the server kept")
	}
	failed := &statement{plan: &rewrite.Plan{}, prev: old}
	ps.statements[""] = failed
	failed.state.Store(stmtFailed)
	if ps.lookup("") != nil {
		t.Fatal("a failed unnamed Parse left a statement (PostgreSQL drops the unnamed one first)")
	}
}

func TestDescribesPHI(t *testing.T) {
	pol, _ := testColumns(t)
	cat, err := buildCatalog(pol, [][][]byte{
		{[]byte("7"), []byte("public"), []byte("patients"), []byte("1"), []byte("email"), []byte("25")},
		{[]byte("7"), []byte("public"), []byte("patients"), []byte("2"), []byte("email_bidx"), []byte("25")},
	})
	if err != nil {
		t.Fatal(err)
	}
	enc := func(fields ...pgproto3.FieldDescription) []byte {
		b, err := (&pgproto3.RowDescription{Fields: fields}).Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	plain := pgproto3.FieldDescription{Name: []byte("x"), TableOID: 9, TableAttributeNumber: 1}
	for name, tc := range map[string]struct {
		msg  []byte
		want bool
	}{
		"no fields":       {enc(), false},
		"other table":     {enc(plain, plain), false},
		"phi column":      {enc(plain, pgproto3.FieldDescription{Name: []byte("e"), TableOID: 7, TableAttributeNumber: 1}), true},
		"blind index":     {enc(pgproto3.FieldDescription{Name: []byte("b"), TableOID: 7, TableAttributeNumber: 2}), true},
		"non-PHI column":  {enc(pgproto3.FieldDescription{Name: []byte("id"), TableOID: 7, TableAttributeNumber: 3}), false},
		"truncated":       {enc(plain)[:12], true},
		"count too large": {append(enc(plain)[:5], 0, 9), true},
	} {
		if got := cat.describesPHI(tc.msg); got != tc.want {
			t.Errorf("%s: describesPHI = %v, want %v", name, got, tc.want)
		}
	}
}

// isoUTC is what a default server reports: DateStyle ISO, MDY and
// TimeZone UTC.
func isoUTC() *atomic.Pointer[sessionSettings] {
	var p atomic.Pointer[sessionSettings]
	p.Store((&sessionSettings{}).withSetting("DateStyle", "ISO, MDY").withSetting("TimeZone", "UTC"))
	return &p
}
