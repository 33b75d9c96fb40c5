package integration

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/internal/pgcluster"
)

// The fourteenth independent attack on issue 9 (branch a14): the guard's
// settings parameters made once per reported change (43c12a6), the
// settings check (84ab47f, 3be81e3), Query and COPY inside an open batch
// (7b16a6f, f88c577), and the raw-I/O relay (rawio_linux.go).

// a14Dates counts, among the patients with ids from base to base+n-1,
// those whose date of birth is each value.
func a14Dates(t *testing.T, p *testProxy, base, n int) map[string]int {
	t.Helper()
	rows, err := phiConn(t, p).Query(context.Background(), "SELECT date_of_birth FROM patients WHERE id >= $1 AND id < $2", base, base+n)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]int{}
	for rows.Next() {
		var d *time.Time
		if err := rows.Scan(&d); err != nil {
			t.Fatal(err)
		}
		if d == nil {
			got["null"]++
		} else {
			got[d.Format("2006-01-02")]++
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

// Finding 1 (wrong answer, a race; no plaintext upstream). A text's
// date literals are read under the settings loaded value by value
// (writerSettings, datetime.go), and the guard behind them loads its
// parameters again afterwards (guardSettingsParams; withChecks' inline
// check likewise): when the ParameterStatus of a function run by the
// Query sent just before (SELECT a14_slow_dmy(d): pg_sleep, then
// set_config('datestyle', 'SQL, DMY'), which movesSettings does not see)
// arrives while the proxy handles a long INSERT, the dates read so far
// are read under ISO, MDY, the rest and the guard's parameters under SQL,
// DMY, and the guard passes on the server: '01/02/2020' stored as 2
// January where PostgreSQL stores 1 February (seen: 2131 of 20000 rows,
// and all 20000 in another run, where the reading ended just before the
// answer and the guard's load just after). Not new with 43c12a6: the
// guard loaded the settings at its own time before it too. Whether a run
// hits the window depends on timing (the lead's sleep is swept across the
// ~1 s the INSERT takes through the proxy); a run that misses it stores
// 1 February or is refused 55000, both right. A fix: one snapshot of
// the settings per stretch of client messages up to the guard that
// checks them (taken at the first message after the last guard or idle,
// used by writerSettings, checkedSettings and guardSettingsParams).
func TestAttack14GuardSettingsRace(t *testing.T) {
	t.Skip("finding 1: values read under one reported setting, the guard's parameters loaded later under another")
	p := startPHIProxy(t)
	a11Setup(t, p)
	const n = 20000
	if _, err := phiDirect(t).Exec(context.Background(), "CREATE OR REPLACE FUNCTION a14_slow_dmy(float8) RETURNS int LANGUAGE plpgsql AS $$BEGIN PERFORM pg_sleep($1); PERFORM set_config('datestyle', 'SQL, DMY', false); RETURN 1; END$$"); err != nil {
		t.Fatal(err)
	}
	var leads [][]pgproto3.FrontendMessage
	var sleeps []string
	for i := 0; i < 12; i++ {
		d := strconv.FormatFloat(0.78+0.006*float64(i), 'f', 3, 64)
		leads = append(leads, a13Msgs(a13Q("SELECT a14_slow_dmy("+d+")")))
		sleeps = append(sleeps, d)
	}
	for run, lead := range leads {
		base := 14000000 + run*n
		var b strings.Builder
		b.WriteString("INSERT INTO patients (id, date_of_birth) VALUES ")
		for i := 0; i < n; i++ {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(" + strconv.Itoa(base+i) + ", '01/02/2020')")
		}
		hc := rawSession(t, p.dsn(pgcluster.ScramUser, phiDatabase))
		// The lead goes first, on its own: the relay flushes what it sent
		// upstream when it has read all the client sent, so a lead and a
		// text sent together reach the server together.
		for _, m := range lead {
			hc.Frontend.Send(m)
		}
		if err := hc.Frontend.Flush(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Millisecond) // ordering only: the lead is upstream
		sent := time.Now()
		out := a13On(hc, a13Step{a13Msgs(a13Q(b.String())), 2})
		t.Logf("run %d (sleep %s): answered in %v", run, sleeps[run], time.Since(sent))
		got := a14Dates(t, p, base, n)
		if got["2020-01-02"] > 0 {
			t.Errorf("run %d: %d of %d rows stored as 2020-01-02 where PostgreSQL stores 2020-02-01 (%v)\n%s", run, got["2020-01-02"], n, got, a14Short(out))
		} else {
			t.Logf("run %d: %v %s", run, got, a14Short(out))
		}
		phiDirect(t).Exec(context.Background(), "DELETE FROM patients WHERE id >= $1 AND id < $2", base, base+n)
	}
}

// a14Short cuts out to its first 300 bytes.
func a14Short(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}

// a14Big is a PHI text of about n bytes: a remembered secret, then
// letters, digits, "é", a backslash and quotes in a fixed pseudo-random
// order, so a byte moved, lost or doubled anywhere shows.
func a14Big(label string, n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \\'\"é"
	var b strings.Builder
	b.WriteString(secret(label))
	x := uint32(len(label)) + 2463534242
	for b.Len() < n {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		i := int(x % uint32(len(alphabet)-1))
		if alphabet[i] >= 0x80 { // the two bytes of é together
			i = len(alphabet) - 2
		}
		b.WriteString(alphabet[i : i+1+int(boolInt(alphabet[i] >= 0x80))])
	}
	return b.String()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// a14Diff describes where got and want first differ.
func a14Diff(got, want string) string {
	if got == want {
		return "same"
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	return fmt.Sprintf("lengths %d and %d, first difference at byte %d", len(got), len(want), i)
}

// Variants that held: PHI values over 1 MiB (the raw calls move at most
// 1 MiB each) in Bind, in a simple Query's literal and in DataRow; a
// pipeline of many statements with values; COPY of PHI in and out.
func TestAttack14LargeValues(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	conn := phiConn(t, p)
	read := func(id int64) string {
		var got string
		if err := conn.QueryRow(ctx, "SELECT first_name FROM patients WHERE id = $1", id).Scan(&got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	// Bind and DataRow.
	for _, n := range []int{1 << 20, 1<<20 + 1, 3<<20 + 17} {
		v := a14Big("a14bind", n)
		var id int64
		if err := conn.QueryRow(ctx, "INSERT INTO patients (first_name, last_name, email) VALUES ($1, $1, $1) RETURNING id", v).Scan(&id); err != nil {
			t.Fatal(err)
		}
		if got := read(id); got != v {
			t.Errorf("Bind of %d bytes read back: %s", n, a14Diff(got, v))
		}
		var a, b string
		if err := conn.QueryRow(ctx, "SELECT first_name, last_name FROM patients WHERE email = $1 AND id = $2", v, id).Scan(&a, &b); err != nil {
			t.Fatal(err)
		} else if a != v || b != v {
			t.Errorf("two values of %d bytes in a DataRow: %s, %s", n, a14Diff(a, v), a14Diff(b, v))
		}
	}
	// A simple Query's literal.
	v := a14Big("a14simple", 2<<20+5)
	var id int64
	lit := "'" + strings.ReplaceAll(v, "'", "''") + "'"
	if err := conn.QueryRow(ctx, "INSERT INTO patients (first_name) VALUES ("+lit+") RETURNING id", pgx.QueryExecModeSimpleProtocol).Scan(&id); err != nil {
		t.Fatal(err)
	}
	if got := read(id); got != v {
		t.Errorf("simple literal of %d bytes read back: %s", len(v), a14Diff(got, v))
	}
	// A pipeline of many statements.
	batch := &pgx.Batch{}
	var vals []string
	for i := 0; i < 400; i++ {
		v := a14Big("a14pipe"+strconv.Itoa(i), 7000+i*97)
		vals = append(vals, v)
		batch.Queue("INSERT INTO patients (first_name) VALUES ($1) RETURNING first_name", v)
	}
	br := conn.SendBatch(ctx, batch)
	for i, v := range vals {
		var got string
		if err := br.QueryRow().Scan(&got); err != nil {
			t.Fatalf("pipeline statement %d: %v", i, err)
		}
		if got != v {
			t.Errorf("pipeline statement %d: %s", i, a14Diff(got, v))
		}
	}
	if err := br.Close(); err != nil {
		t.Fatal(err)
	}
	// COPY in and out.
	ids := []int64{14900001, 14900002}
	cv := []string{a14Big("a14copy1", 1<<20+3), a14Big("a14copy2", 2<<20+9)}
	var in strings.Builder
	for i, id := range ids {
		in.WriteString(strconv.FormatInt(id, 10) + "\t" + strings.ReplaceAll(cv[i], `\`, `\\`) + "\n")
	}
	if _, err := conn.PgConn().CopyFrom(ctx, strings.NewReader(in.String()), "COPY patients (id, first_name) FROM STDIN"); err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if got := read(id); got != cv[i] {
			t.Errorf("COPY FROM of %d bytes read back: %s", len(cv[i]), a14Diff(got, cv[i]))
		}
	}
	var out bytes.Buffer
	if _, err := conn.PgConn().CopyTo(ctx, &out, "COPY (SELECT id, first_name FROM patients WHERE id IN (14900001, 14900002) ORDER BY id) TO STDOUT"); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), in.String(); got != want {
		t.Errorf("COPY TO: %s", a14Diff(got, want))
	}
	phiDirect(t).Exec(ctx, "DELETE FROM patients WHERE id IN (14900001, 14900002)")
}

// a14Rows runs steps on a new raw session and returns the first values of
// the DataRows and the errors, quoted.
func a14Rows(t *testing.T, dsn string, steps ...a13Step) []string {
	t.Helper()
	hc := rawSession(t, dsn)
	var got []string
	for _, st := range steps {
		for _, m := range st.msgs {
			hc.Frontend.Send(m)
		}
		if err := hc.Frontend.Flush(); err != nil {
			t.Fatal(err)
		}
		_ = hc.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for n := st.n; n > 0; {
			m, err := hc.Frontend.Receive()
			if err != nil {
				t.Fatal(err)
			}
			switch m := m.(type) {
			case *pgproto3.DataRow:
				got = append(got, fmt.Sprintf("%q", m.Values[0]))
			case *pgproto3.CopyData:
				got = append(got, fmt.Sprintf("%q", m.Data))
			case *pgproto3.ErrorResponse:
				got = append(got, "E"+m.Code)
			case *pgproto3.ReadyForQuery:
				n--
			}
		}
	}
	return got
}

// Finding 2 (wrong answer; fixed). PHI text read in the same text or
// pipeline as a statement that sets client_encoding and that the proxy
// sees (SET, set_config by name): PostgreSQL converts the rows of the
// statements after it to LATIN1 ("\xe9"), the proxy sent the decrypted
// text in UTF-8 ("é"). movesSettings marks the settings as moved, which
// turns the settings check off (checkedSettings) and refuses dates, but
// text was shown as ever. Now a result's non-ASCII PHI text is refused
// (0A000) while its settings may have moved, as dates were.
func TestAttack14EncodingSetInText(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	name := secret("a14enc") + "é"
	var id int64
	if err := phiConn(t, p).QueryRow(ctx, "INSERT INTO patients (first_name) VALUES ($1) RETURNING id", name).Scan(&id); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%q", strings.TrimSuffix(name, "é")+"\xe9")
	sel := "SELECT first_name FROM patients WHERE id = " + strconv.FormatInt(id, 10)
	dsn := p.dsn(pgcluster.ScramUser, phiDatabase)
	// PostgreSQL itself, on a plaintext value.
	if got := a14Rows(t, directDSN(pgcluster.ScramUser, phiDatabase), a13Step{a13Msgs(a13Q("SET client_encoding TO 'LATIN1'; SELECT 'é'::text")), 1}); len(got) != 1 || got[0] != `"\xe9"` {
		t.Fatalf("PostgreSQL: %v", got)
	}
	copyOut := "COPY (SELECT id, first_name FROM patients WHERE id = " + strconv.FormatInt(id, 10) + ") TO STDOUT"
	for _, c := range []struct {
		name  string
		steps []a13Step
		copy  bool
	}{
		{"COPY TO in the text", []a13Step{{a13Msgs(a13Q("SET client_encoding TO 'LATIN1'; " + copyOut)), 1}}, true},
		{"simple text", []a13Step{{a13Msgs(a13Q("SET client_encoding TO 'LATIN1'; " + sel)), 1}}, false},
		{"simple text, set_config", []a13Step{{a13Msgs(a13Q("SELECT set_config('client_encoding', 'LATIN1', false); " + sel)), 1}}, false},
		{"simple text, in a CTE", []a13Step{{a13Msgs(a13Q("WITH x AS (SELECT set_config('client_encoding', 'LATIN1', false)) SELECT * FROM x; " + sel)), 1}}, false},
		{"simple text, DO", []a13Step{{a13Msgs(a13Q("DO $$BEGIN PERFORM set_config('client_encoding', 'LATIN1', false); END$$; " + sel)), 1}}, false},
		{"two queries pipelined", []a13Step{{a13Msgs(a13Q("SET client_encoding TO 'LATIN1'"), a13Q(sel)), 2}}, false},
		{"extended pipeline", []a13Step{{a13Msgs(a13PBE("SET client_encoding TO 'LATIN1'"), a13PBE(sel), &pgproto3.Sync{}), 1}}, false},
		{"extended, set_config", []a13Step{{a13Msgs(a13PBE("SELECT set_config('client_encoding', 'LATIN1', false)"), a13PBE(sel), &pgproto3.Sync{}), 1}}, false},
		{"extended, set_config then Sync", []a13Step{{a13Msgs(a13PBE("SELECT set_config('client_encoding', 'LATIN1', false)"), &pgproto3.Sync{}, a13PBE(sel), &pgproto3.Sync{}), 2}}, false},
		{"SET LOCAL, rollback, SET", []a13Step{{a13Msgs(a13Q("BEGIN; SET LOCAL client_encoding TO 'UTF8'; ROLLBACK; SET client_encoding TO 'LATIN1'; " + sel)), 1}}, false},
		{"SET then RESET", []a13Step{{a13Msgs(a13Q("SET client_encoding TO 'LATIN1'; RESET client_encoding; SET client_encoding TO 'LATIN1'; " + sel)), 1}}, false},
	} {
		got := a14Rows(t, dsn, c.steps...)
		if c.copy {
			for i := range got {
				if strings.HasPrefix(got[i], "E") {
					continue
				}
				got[i] = strings.Replace(strings.TrimSuffix(got[i], `\n"`)+`"`, strconv.FormatInt(id, 10)+`\t`, "", 1)
			}
		}
		last := ""
		if len(got) > 0 {
			last = got[len(got)-1]
		}
		if last != want && last != "E0A000" && last != "E55000" {
			t.Errorf("%s: %v, PostgreSQL sends %s", c.name, got, want)
		} else {
			t.Logf("%s: %v", c.name, got)
		}
	}
}

// Variant that held: client_encoding LATIN1 set for the role in the
// database (ALTER ROLE … IN DATABASE … SET), in force from a new
// connection's start, without the client asking for it: non-ASCII PHI
// text is refused (0A000), ASCII is shown.
func TestAttack14EncodingByRole(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	name := secret("a14role") + "é"
	var id int64
	if err := phiConn(t, p).QueryRow(ctx, "INSERT INTO patients (first_name, last_name) VALUES ($1, 'ascii') RETURNING id", name).Scan(&id); err != nil {
		t.Fatal(err)
	}
	direct := phiDirect(t)
	if _, err := direct.Exec(ctx, "ALTER ROLE "+pgcluster.ScramUser.Name+" IN DATABASE "+phiDatabase+" SET client_encoding = 'LATIN1'"); err != nil {
		t.Fatal(err)
	}
	defer direct.Exec(ctx, "ALTER ROLE "+pgcluster.ScramUser.Name+" IN DATABASE "+phiDatabase+" RESET client_encoding")
	sel := "SELECT %s FROM patients WHERE id = " + strconv.FormatInt(id, 10)
	dsn := p.dsn(pgcluster.ScramUser, phiDatabase)
	got := a14Rows(t, dsn, a13Step{a13Msgs(a13Q("SHOW client_encoding"), a13Q(fmt.Sprintf(sel, "first_name")), a13Q(fmt.Sprintf(sel, "last_name"))), 3})
	if len(got) != 3 || got[0] != `"LATIN1"` || got[1] != "E0A000" && got[1] != fmt.Sprintf("%q", strings.TrimSuffix(name, "é")+"\xe9") || got[2] != `"ascii"` {
		t.Errorf("under the role's LATIN1: %v", got)
	} else {
		t.Logf("%v", got)
	}
}
