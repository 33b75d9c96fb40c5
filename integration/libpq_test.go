package integration

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	_ "github.com/lib/pq"

	"github.com/novamind/phiproxy/internal/pgcluster"
)

// TestLibPQ drives the proxy with lib/pq through database/sql, as ORMs do,
// and compares every result with the same calls made directly.
func TestLibPQ(t *testing.T) {
	p := startProxy(t)
	su := superuser(t)
	ctx := context.Background()
	for _, table := range []string{"pq_direct", "pq_proxy"} {
		if _, err := su.Exec(ctx, fmt.Sprintf(`DROP TABLE IF EXISTS %[1]s;
			CREATE TABLE %[1]s(id serial PRIMARY KEY, name text NOT NULL, born date, weight numeric, flags bool[]);
			ALTER TABLE %[1]s OWNER TO %[2]s;
			GRANT SELECT ON %[1]s TO %[3]s`, table, pgcluster.ScramUser.Name, pgcluster.MD5User.Name)); err != nil {
			t.Fatal(err)
		}
	}

	run := func(t *testing.T, dsn, table string) []string {
		db, err := sql.Open("postgres", dsn)
		if err != nil {
			t.Fatalf("sql.Open: %v", err)
		}
		defer db.Close()
		db.SetMaxOpenConns(3)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var out []string
		add := func(v ...any) { out = append(out, fmt.Sprint(v...)) }

		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatalf("begin: %v", err)
		}
		stmt, err := tx.PrepareContext(ctx, fmt.Sprintf("INSERT INTO %s(name, born, weight) VALUES ($1, $2, $3) RETURNING id", table))
		if err != nil {
			t.Fatalf("prepare: %v", err)
		}
		for i := range 50 {
			var id int
			err := stmt.QueryRowContext(ctx, fmt.Sprintf("patient %d", i), time.Date(1950+i, 1, 1+i%28, 0, 0, 0, 0, time.UTC), fmt.Sprintf("%d.5", 50+i)).Scan(&id)
			add(id, err)
		}
		stmt.Close()
		if err := tx.Commit(); err != nil {
			t.Fatalf("commit: %v", err)
		}

		// A rolled-back transaction leaves nothing.
		tx, err = db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = tx.ExecContext(ctx, fmt.Sprintf("DELETE FROM %s", table))
		add("delete in tx:", err)
		add("rollback:", tx.Rollback())

		res, err := db.ExecContext(ctx, fmt.Sprintf("UPDATE %s SET flags = ARRAY[id %% 2 = 0, true] WHERE id > $1", table), 25)
		if err == nil {
			n, _ := res.RowsAffected()
			add("updated", n)
		} else {
			add("update:", err)
		}

		rows, err := db.QueryContext(ctx, fmt.Sprintf("SELECT id, name, born, weight, flags FROM %s ORDER BY id", table))
		if err != nil {
			t.Fatalf("query: %v", err)
		}
		for rows.Next() {
			var id int
			var name string
			var born time.Time
			var weight string
			var flags sql.NullString
			if err := rows.Scan(&id, &name, &born, &weight, &flags); err != nil {
				t.Fatalf("scan: %v", err)
			}
			add(id, name, born.Format(time.DateOnly), weight, flags.String)
		}
		add("rows err:", rows.Err())

		// Server errors arrive intact.
		_, err = db.ExecContext(ctx, "SELECT 1/0")
		add("error:", err)
		return out
	}
	direct := run(t, directDSN(pgcluster.ScramUser, pgcluster.AppDatabase), "pq_direct")
	proxied := run(t, p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase), "pq_proxy")
	if diff := cmp.Diff(direct, proxied); diff != "" {
		t.Fatalf("lib/pq results differ (-direct +proxy):\n%s", diff)
	}
	if len(proxied) < 100 {
		t.Fatalf("only %d results", len(proxied))
	}

	// The MD5 user through lib/pq (it sends its own MD5 response).
	db, err := sql.Open("postgres", p.dsn(pgcluster.MD5User, pgcluster.AppDatabase))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var who string
	var n int
	if err := db.QueryRowContext(ctx, "SELECT current_user, count(*) FROM pq_proxy").Scan(&who, &n); err != nil {
		t.Fatalf("md5 user through lib/pq: %v", err)
	}
	if who != pgcluster.MD5User.Name || n != 50 {
		t.Fatalf("md5 user sees %q, %d rows; want %q, 50", who, n, pgcluster.MD5User.Name)
	}
}
