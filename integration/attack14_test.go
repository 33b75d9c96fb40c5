package integration

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

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
