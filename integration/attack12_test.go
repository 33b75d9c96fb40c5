package integration

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/internal/pgcluster"
)

// The twelfth independent attack on issue 9 (branch attack12): round 11's
// fixes (a guard after each Execute, prepared date/time literals bound
// under other settings), the installation's transaction and its NOTIFY,
// and foreign tables. One test per finding, then the variants that held
// and no other test covers.

// a12StoredDate is the date the proxy stored for patient id, as ISO.
func a12StoredDate(t *testing.T, p *testProxy, id int64) string {
	t.Helper()
	var d *time.Time
	err := phiConn(t, p).QueryRow(context.Background(), "SELECT date_of_birth FROM patients WHERE id = $1", id).Scan(&d)
	if err != nil && err != pgx.ErrNoRows {
		t.Fatal(err)
	}
	if d == nil {
		return ""
	}
	return d.Format("2006-01-02")
}

// Finding 1 (wrong answer). COPY FROM STDIN sent as a simple Query goes
// without the guard (the guard's Sync cannot follow it), so without its
// settings check: sent behind a pipeline whose function set DateStyle
// ('SQL, DMY'), and not yet answered, its data is read by the proxy under
// the settings last reported (ISO, MDY): '01/02/2020' stored as 2 January
// where PostgreSQL, which reads it under DMY, stores 1 February.
func TestAttack12CopyFromAfterFunction(t *testing.T) {
	p := startPHIProxy(t)
	a11Setup(t, p)
	hc := rawSession(t, p.dsn(pgcluster.ScramUser, phiDatabase))
	for i, lead := range [][]pgproto3.FrontendMessage{
		// A pipeline with its own Sync, the COPY sent before its answer.
		{&pgproto3.Parse{Query: "SELECT a11_dmy()"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}},
		// A simple Query, the COPY sent before its answer.
		{&pgproto3.Query{String: "SELECT a11_dmy()"}},
	} {
		id := int64(950001 + i)
		msgs := append(lead,
			&pgproto3.Query{String: "COPY patients (id, date_of_birth) FROM STDIN"},
			&pgproto3.CopyData{Data: []byte(strconv.FormatInt(id, 10) + "\t01/02/2020\n")},
			&pgproto3.CopyDone{},
		)
		out := exchangeN(t, hc, 2, msgs...)
		exchange(t, hc, &pgproto3.Query{String: "RESET datestyle"})
		all := strings.Join(out, "\n")
		if d := a12StoredDate(t, p, id); d != "" && d != "2020-02-01" {
			t.Errorf("lead %d: the proxy stored %q where PostgreSQL stores 2020-02-01 (read under SQL, DMY)\n%s", i, d, all)
		} else if d == "" && !strings.Contains(all, "depends on DateStyle or TimeZone") {
			t.Errorf("lead %d: nothing stored, and not for the settings:\n%s", i, all)
		}

		// An ISO date reads the same under every DateStyle: taken.
		id += 10
		msgs = append(lead,
			&pgproto3.Query{String: "COPY patients (id, date_of_birth) FROM STDIN"},
			&pgproto3.CopyData{Data: []byte(strconv.FormatInt(id, 10) + "\t2020-03-04\n")},
			&pgproto3.CopyDone{},
		)
		out = exchangeN(t, hc, 2, msgs...)
		exchange(t, hc, &pgproto3.Query{String: "RESET datestyle"})
		if d := a12StoredDate(t, p, id); d != "2020-03-04" {
			t.Errorf("lead %d: an ISO date behind the change: stored %q\n%s", i, d, strings.Join(out, "\n"))
		}
	}
}
