package integration

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/internal/pgcluster"
)

const rotationPolicy = `  tables:
    - name: public.people
      columns:
        name:  { type: text }
        email: { type: text, blind_index: {}, search: { ci: { normalize: [ascii_lower] } } }
        photo: { type: bytea, storage: bytea }
`

// setupPeople creates the ready people table with phiproxy schema (both
// steps) and inserts n people through p.
func setupPeople(t *testing.T, e *opsEnv) {
	t.Helper()
	if _, err := e.direct(t).Exec(context.Background(), "CREATE TABLE people (id bigserial PRIMARY KEY, name text, email text, photo bytea)"); err != nil {
		t.Fatal(err)
	}
	res := e.run(t, "schema", "--config", e.config)
	if res.code != 1 {
		t.Fatalf("schema: %s", res)
	}
	e.psqlFile(t, res.stdout)
	if res := e.run(t, "schema", "--config", e.config); res.code != 0 {
		t.Fatalf("schema after its DDL: %s", res)
	}
}

// insertPeople inserts people through conn and returns their emails by id.
func insertPeople(t *testing.T, conn *pgx.Conn, label string, n int) map[int64]string {
	t.Helper()
	out := map[int64]string{}
	for i := range n {
		email := fmt.Sprintf("%s-%d@example.org", label, i)
		var id int64
		if err := conn.QueryRow(context.Background(), "INSERT INTO people (name, email, photo) VALUES ($1, $2, $3) RETURNING id",
			secret(label), email, []byte{byte(i), 0, 1}).Scan(&id); err != nil {
			t.Fatal(err)
		}
		out[id] = email
	}
	return out
}

// keyIDs counts the stored values of people by envelope key id.
func keyIDs(t *testing.T, e *opsEnv) map[uint32]int {
	t.Helper()
	out := map[uint32]int{}
	for _, r := range readAll(t, e.direct(t), "SELECT name, email, photo FROM people", pgx.QueryResultFormats{pgx.BinaryFormatCode}) {
		for _, v := range r {
			id, ok := crypto.EnvelopeKeyID([]byte(v))
			if !ok {
				t.Fatalf("a stored value is not an envelope")
			}
			out[id]++
		}
	}
	return out
}

// checkPeople reads every person through the proxy and finds each by email.
func checkPeople(t *testing.T, conn *pgx.Conn, want map[int64]string) {
	t.Helper()
	ctx := context.Background()
	for id, email := range want {
		var got int64
		// The exact index and the normalized one (lower()).
		if err := conn.QueryRow(ctx, "SELECT id FROM people WHERE email = $1", email).Scan(&got); err != nil || got != id {
			t.Fatalf("lookup of person %d by email: %d, %v", id, got, err)
		}
		if err := conn.QueryRow(ctx, "SELECT id FROM people WHERE lower(email) = lower($1)", strings.ToUpper(email)).Scan(&got); err != nil || got != id {
			t.Fatalf("lookup of person %d by lower(email): %d, %v", id, got, err)
		}
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM (SELECT name, email, photo FROM people) s").Scan(&n); err != nil || n != len(want) {
		t.Fatalf("read %d people through the proxy (%v), want %d", n, err, len(want))
	}
}

// usageOf runs keys usage and returns the total line's counts by header.
func usageOf(t *testing.T, e *opsEnv) map[string]string {
	t.Helper()
	res := e.mustRun(t, "keys", "usage", "--config", e.config)
	t.Logf("keys usage:\n%s%s", res.stdout, res.stderr)
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	headRE := regexp.MustCompile(`KEY \d+ \([a-z -]+\)|PLAINTEXT|UNREADABLE`)
	heads := headRE.FindAllString(lines[1], -1)
	var total []string
	for _, l := range lines {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "total" {
			total = f[1:]
		}
	}
	if len(total) != len(heads) {
		t.Fatalf("keys usage output:\n%s", res.stdout)
	}
	out := map[string]string{}
	for i, h := range heads {
		out[h] = total[i]
	}
	return out
}

// TestKeyRotationEndToEnd: rotate, restart the proxy, new writes under
// the new key, old rows still read, keys usage, retire refused, migrate
// reencrypt, usage 0 for the old key, retire accepted, reads after a
// restart; then the blind-index key: rotate-index, migrate reindex.
func TestKeyRotationEndToEnd(t *testing.T) {
	e := newOpsEnv(t, "ops_rotation", rotationPolicy)
	setupPeople(t, e)
	p1 := e.startProxy(t)
	people := insertPeople(t, connect(t, p1.dsn(pgcluster.ScramUser, e.db)), "before", 30)

	rot := e.mustRun(t, "keys", "rotate", "--config", e.config)
	if !strings.Contains(rot.stdout, "data key 2 is active") || !strings.Contains(rot.stdout, "migrate reencrypt") {
		t.Fatalf("rotate: %s", rot)
	}
	// The proxy reads its keyring at startup: restart it.
	p2 := e.startProxy(t)
	conn := connect(t, p2.dsn(pgcluster.ScramUser, e.db))
	for id, email := range insertPeople(t, conn, "after", 20) {
		people[id] = email
	}
	if got := keyIDs(t, e); got[1] != 90 || got[2] != 60 {
		t.Fatalf("values by key after the rotation: %v, want 90 under key 1 and 60 under key 2", got)
	}
	checkPeople(t, conn, people)

	u := usageOf(t, e)
	if u["KEY 1 (decrypt-only)"] != "90" || u["KEY 2 (active)"] != "60" || u["PLAINTEXT"] != "0" {
		t.Fatalf("keys usage before reencrypt: %v", u)
	}
	res := e.run(t, "keys", "retire", "1", "--config", e.config)
	if res.code != 1 || !strings.Contains(res.stderr, "data key 1 still encrypts 90 values") || !strings.Contains(res.stderr, "public.people.email (30 values in database ops_rotation)") {
		t.Fatalf("retire of a key in use: %s", res)
	}
	mig := e.mustRun(t, "migrate", "reencrypt", "--config", e.config, "--table", "people", "--batch", "7")
	if !strings.Contains(mig.stdout, "updated 30 rows") {
		t.Errorf("reencrypt: %s", mig)
	}
	if got := keyIDs(t, e); got[1] != 0 || got[2] != 150 {
		t.Fatalf("values by key after reencrypt: %v", got)
	}
	if u := usageOf(t, e); u["KEY 1 (decrypt-only)"] != "0" || u["KEY 2 (active)"] != "150" {
		t.Fatalf("keys usage after reencrypt: %v", u)
	}
	e.mustRun(t, "keys", "retire", "--config", e.config, "1")
	p3 := e.startProxy(t)
	conn = connect(t, p3.dsn(pgcluster.ScramUser, e.db))
	checkPeople(t, conn, people)
	if e.openKeyring(t).Keys()[0].State != crypto.StateRetired {
		t.Fatal("key 1 not retired")
	}

	// The blind-index key: after rotate-index and a restart, lookups miss
	// until migrate reindex has recomputed the indexes.
	e.mustRun(t, "keys", "rotate-index", "--config", e.config)
	p4 := e.startProxy(t)
	conn = connect(t, p4.dsn(pgcluster.ScramUser, e.db))
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM people WHERE email = 'before-1@example.org'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("lookup under the new index key before reindex: %d rows, %v (want 0: the index is still the old key's)", n, err)
	}
	idx := e.mustRun(t, "migrate", "reindex", "--config", e.config, "--table", "people")
	if !strings.Contains(idx.stdout, "updated 50 rows") {
		t.Errorf("reindex: %s", idx)
	}
	checkPeople(t, conn, people)
	if again := e.mustRun(t, "migrate", "reindex", "--config", e.config, "--table", "people"); !strings.Contains(again.stdout, "updated 0 rows") {
		t.Errorf("a second reindex is not a no-op: %s", again)
	}
}
