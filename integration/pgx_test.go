package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/internal/pgcluster"
)

// typesQuery returns one value of many types, so each query mode exercises
// text and binary encodings of them.
const typesQuery = `SELECT 1::int4 AS i4, 2::int8 AS i8, 3.5::float8 AS f8, 12345.6789::numeric AS num,
	true AS b, 'héllo wörld'::text AS t, '\xdeadbeef'::bytea AS by, '2024-02-29'::date AS d,
	'2024-02-29 12:34:56.789+00'::timestamptz AS ts, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u,
	'{"a":[1,2,{"b":null}]}'::jsonb AS j, ARRAY[1,2,3] AS arr, NULL::text AS n, interval '1 day 2 hours' AS iv`

func TestPgxQueryModes(t *testing.T) {
	p := startProxy(t)
	modes := []pgx.QueryExecMode{
		pgx.QueryExecModeSimpleProtocol,
		pgx.QueryExecModeExec,
		pgx.QueryExecModeCacheStatement,
		pgx.QueryExecModeCacheDescribe,
		pgx.QueryExecModeDescribeExec,
	}
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			both(t, p, func(t *testing.T, conn *pgx.Conn) []rowsResult {
				ctx := context.Background()
				var out []rowsResult
				out = append(out, queryAll(ctx, conn, typesQuery))
				out = append(out, queryAll(ctx, conn, "SELECT $1::int4 + $2::int4 AS sum, $3::text AS echo, $4::bytea AS raw", 40, 2, "it's", []byte{0, 1, 2}))
				out = append(out, queryAll(ctx, conn, "SELECT g, md5(g::text) FROM generate_series(1, 2000) g"))
				// A server error, then the session goes on.
				out = append(out, queryAll(ctx, conn, "SELECT 1/0"))
				out = append(out, queryAll(ctx, conn, "SELECT * FROM no_such_table"))
				out = append(out, queryAll(ctx, conn, "SELECT 'still alive'"))
				// A transaction rolled back by an error.
				out = append(out, queryAll(ctx, conn, "BEGIN"))
				out = append(out, queryAll(ctx, conn, "SELECT 1/0"))
				out = append(out, queryAll(ctx, conn, "SELECT 1"))
				out = append(out, queryAll(ctx, conn, "ROLLBACK"))
				return out
			}, func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = mode })
		})
	}
}

func TestSimpleMultiStatement(t *testing.T) {
	p := startProxy(t)
	type result struct {
		Tag  string
		Rows [][][]byte
	}
	got := both(t, p, func(t *testing.T, conn *pgx.Conn) []result {
		ctx := context.Background()
		results, err := conn.PgConn().Exec(ctx, `CREATE TEMP TABLE multi(a int, b text);
			INSERT INTO multi VALUES (1, 'one'), (2, 'two');
			SELECT * FROM multi ORDER BY a;
			UPDATE multi SET b = upper(b);
			SELECT b FROM multi ORDER BY a`).ReadAll()
		if err != nil {
			t.Fatalf("multi-statement query: %v", err)
		}
		var out []result
		for _, r := range results {
			out = append(out, result{Tag: r.CommandTag.String(), Rows: r.Rows})
		}
		// An error in the middle stops the rest of the string.
		_, err = conn.PgConn().Exec(ctx, "SELECT 1; SELECT 1/0; SELECT 3").ReadAll()
		out = append(out, result{Tag: errString(err)})
		return out
	})
	if len(got) != 6 || got[4].Tag != "SELECT 2" || string(got[4].Rows[1][0]) != "TWO" {
		t.Errorf("unexpected results: %+v", got)
	}
}

// TestBinaryFormats compares the exact bytes of text and binary parameters
// and results.
func TestBinaryFormats(t *testing.T) {
	p := startProxy(t)
	both(t, p, func(t *testing.T, conn *pgx.Conn) [][][]byte {
		ctx := context.Background()
		var out [][][]byte
		for _, format := range []int16{0, 1} {
			res := conn.PgConn().ExecParams(ctx, typesQuery, nil, nil, nil, []int16{format}).Read()
			if res.Err != nil {
				t.Fatalf("format %d: %v", format, res.Err)
			}
			out = append(out, res.Rows...)
		}
		// A binary int8 parameter and a text one.
		res := conn.PgConn().ExecParams(ctx, "SELECT $1::int8 * 2, $2::text || '!'",
			[][]byte{{0, 0, 0, 0, 0, 0, 0, 21}, []byte("hi")}, []uint32{20, 25}, []int16{1, 0}, []int16{1, 0}).Read()
		if res.Err != nil {
			t.Fatalf("binary params: %v", res.Err)
		}
		out = append(out, res.Rows...)
		return out
	})
}

func TestPipeline100(t *testing.T) {
	p := startProxy(t)

	t.Run("batch", func(t *testing.T) {
		both(t, p, func(t *testing.T, conn *pgx.Conn) []string {
			ctx := context.Background()
			if _, err := conn.Exec(ctx, "CREATE TEMP TABLE pipe(id int PRIMARY KEY, v text)"); err != nil {
				t.Fatal(err)
			}
			b := &pgx.Batch{}
			for i := range 100 {
				switch i % 4 {
				case 0, 1:
					b.Queue("INSERT INTO pipe VALUES ($1, $2)", i, fmt.Sprint("v", i))
				case 2:
					b.Queue("SELECT count(*), max(id) FROM pipe WHERE id <= $1", i)
				default:
					b.Queue("UPDATE pipe SET v = v || '+' WHERE id = $1", i-2)
				}
			}
			br := conn.SendBatch(ctx, b)
			var out []string
			for i := range 100 {
				if i%4 == 2 {
					var n, m int
					err := br.QueryRow().Scan(&n, &m)
					out = append(out, fmt.Sprint(n, m, err))
				} else {
					tag, err := br.Exec()
					out = append(out, fmt.Sprint(tag, err))
				}
			}
			if err := br.Close(); err != nil {
				t.Fatalf("batch close: %v", err)
			}
			return out
		})
	})

	t.Run("pgconn pipeline with an error", func(t *testing.T) {
		both(t, p, func(t *testing.T, conn *pgx.Conn) []string {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			pl := conn.PgConn().StartPipeline(ctx)
			pl.SendPrepare("named_stmt", "SELECT $1::int4 * 10", nil)
			for i := range 100 {
				switch {
				case i == 60:
					pl.SendQueryParams("SELECT 1/0", nil, nil, nil, nil)
				case i%2 == 0:
					pl.SendQueryPrepared("named_stmt", [][]byte{fmt.Append(nil, i)}, nil, []int16{1})
				default:
					pl.SendQueryParams("SELECT $1::text, repeat('x', $2::int)", [][]byte{fmt.Append(nil, "row", i), fmt.Append(nil, i)}, nil, nil, nil)
				}
			}
			pl.SendPipelineSync()
			pl.SendQueryPrepared("named_stmt", [][]byte{[]byte("7")}, nil, nil)
			pl.SendDeallocate("named_stmt")
			pl.SendPipelineSync()
			if err := pl.Flush(); err != nil {
				t.Fatalf("flush: %v", err)
			}
			var out []string
			for {
				res, err := pl.GetResults()
				if err != nil {
					out = append(out, errString(err))
					continue
				}
				if res == nil {
					break
				}
				switch r := res.(type) {
				case *pgconn.ResultReader:
					rr := r.Read()
					out = append(out, fmt.Sprintf("%q %v %v", rr.Rows, rr.CommandTag, rr.Err))
				case *pgconn.StatementDescription:
					out = append(out, fmt.Sprint("prepared ", r.Name, r.ParamOIDs))
				default:
					out = append(out, fmt.Sprintf("%T", r))
				}
			}
			if err := pl.Close(); err != nil {
				t.Fatalf("pipeline close: %v", err)
			}
			// Prepare, 60 results, the error, the Sync, then the second segment.
			if len(out) != 66 || out[62] != "*pgconn.PipelineSync" || out[63] != `[["70"]] SELECT 1 <nil>` {
				t.Fatalf("%d results: %q", len(out), out)
			}
			return out
		})
	})
}

// TestNamedPortalsAndFunctionCall sends messages pgx never sends by itself:
// a named portal read in chunks (PortalSuspended), Describe, Close and the
// FunctionCall message.
func TestNamedPortalsAndFunctionCall(t *testing.T) {
	p := startProxy(t)
	run := func(dsn string) [][]string {
		hc := rawSession(t, dsn)
		var out [][]string
		out = append(out, exchange(t, hc,
			&pgproto3.Parse{Name: "s1", Query: "SELECT g, g * 2 FROM generate_series(1, 10) g"},
			&pgproto3.Describe{ObjectType: 'S', Name: "s1"},
			&pgproto3.Sync{},
		))
		out = append(out, exchange(t, hc,
			&pgproto3.Query{String: "BEGIN"},
		))
		out = append(out, exchange(t, hc,
			&pgproto3.Bind{DestinationPortal: "p1", PreparedStatement: "s1", ResultFormatCodes: []int16{1, 0}},
			&pgproto3.Describe{ObjectType: 'P', Name: "p1"},
			&pgproto3.Execute{Portal: "p1", MaxRows: 4},
			&pgproto3.Execute{Portal: "p1", MaxRows: 4},
			&pgproto3.Execute{Portal: "p1", MaxRows: 4},
			&pgproto3.Close{ObjectType: 'P', Name: "p1"},
			&pgproto3.Close{ObjectType: 'S', Name: "s1"},
			&pgproto3.Sync{},
		))
		out = append(out, exchange(t, hc, &pgproto3.Query{String: "COMMIT"}))
		// int4pl(2, 3) through the fast-path interface; OID 177 is int4pl.
		out = append(out, exchange(t, hc,
			&pgproto3.FunctionCall{Function: 177, ArgFormatCodes: []uint16{0}, Arguments: [][]byte{[]byte("2"), []byte("3")}, ResultFormatCode: 0},
		))
		// Flush (not Sync) must get the pending responses too.
		hc.Frontend.Send(&pgproto3.Parse{Name: "s2", Query: "SELECT 42"})
		hc.Frontend.Send(&pgproto3.Flush{})
		if err := hc.Frontend.Flush(); err != nil {
			t.Fatal(err)
		}
		_ = hc.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		msg, err := hc.Frontend.Receive()
		if err != nil {
			t.Fatalf("receive after Flush: %v", err)
		}
		if _, ok := msg.(*pgproto3.ParseComplete); !ok {
			t.Fatalf("after Parse+Flush got %T, want ParseComplete", msg)
		}
		out = append(out, exchange(t, hc, &pgproto3.Sync{}))
		return out
	}
	direct := run(directDSN(pgcluster.ScramUser, pgcluster.AppDatabase))
	proxied := run(p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase))
	if fmt.Sprint(direct) != fmt.Sprint(proxied) {
		t.Fatalf("responses differ\ndirect: %v\nproxy:  %v", direct, proxied)
	}
	if !strings.Contains(fmt.Sprint(proxied), `"PortalSuspended"`) || !strings.Contains(fmt.Sprint(proxied), `"FunctionCallResponse"`) {
		t.Fatalf("missing PortalSuspended or FunctionCallResponse: %v", proxied)
	}
}

func TestCopy(t *testing.T) {
	p := startProxy(t)
	su := superuser(t)
	ctx := context.Background()
	for _, table := range []string{"copy_direct", "copy_proxy"} {
		if _, err := su.Exec(ctx, fmt.Sprintf(`DROP TABLE IF EXISTS %[1]s;
			CREATE TABLE %[1]s(id int PRIMARY KEY, name text, data bytea, at timestamptz, score numeric);
			ALTER TABLE %[1]s OWNER TO %[2]s`, table, pgcluster.ScramUser.Name)); err != nil {
			t.Fatal(err)
		}
	}
	rows := make([][]any, 5000)
	base := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range rows {
		rows[i] = []any{i, fmt.Sprintf("name %d\twith tab, \"quotes\" and \\ backslash", i), []byte{byte(i), 0, 0xff}, base.Add(time.Duration(i) * time.Minute), fmt.Sprintf("%d.%02d", i, i%100)}
	}
	direct := connect(t, directDSN(pgcluster.ScramUser, pgcluster.AppDatabase))
	proxied := connect(t, p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase))
	cols := []string{"id", "name", "data", "at", "score"}

	for _, c := range []struct {
		conn  *pgx.Conn
		table string
	}{{direct, "copy_direct"}, {proxied, "copy_proxy"}} {
		n, err := c.conn.CopyFrom(ctx, pgx.Identifier{c.table}, cols, pgx.CopyFromRows(rows))
		if err != nil || n != int64(len(rows)) {
			t.Fatalf("CopyFrom %s: n=%d err=%v", c.table, n, err)
		}
	}

	copyOut := func(conn *pgx.Conn, sql string) string {
		var buf bytes.Buffer
		tag, err := conn.PgConn().CopyTo(ctx, &buf, sql)
		if err != nil {
			t.Fatalf("CopyTo %q: %v", sql, err)
		}
		return tag.String() + "\n" + buf.String()
	}
	for _, format := range []string{"text", "csv", "binary"} {
		want := copyOut(direct, fmt.Sprintf("COPY (SELECT * FROM copy_direct ORDER BY id) TO STDOUT (FORMAT %s)", format))
		// The rows the proxy wrote, read through the proxy, equal the rows
		// written and read directly.
		got := copyOut(proxied, fmt.Sprintf("COPY (SELECT * FROM copy_proxy ORDER BY id) TO STDOUT (FORMAT %s)", format))
		if got != want {
			t.Errorf("COPY TO (%s) differs: direct %d bytes, proxy %d bytes", format, len(want), len(got))
		}
	}
	if !strings.HasPrefix(copyOut(proxied, "COPY copy_proxy TO STDOUT"), "COPY 5000\n") {
		t.Error("COPY TO through the proxy did not report 5000 rows")
	}

	// COPY FROM with bad data fails with the server's error; the session
	// goes on.
	errs := both(t, p, func(t *testing.T, conn *pgx.Conn) []string {
		_, err := conn.PgConn().CopyFrom(ctx, strings.NewReader("1\tok\n2\tnot-a-number\n"), "COPY copy_proxy_bad FROM STDIN")
		first := errString(err)
		if _, err := conn.Exec(ctx, "CREATE TEMP TABLE copy_bad(a int, b int)"); err != nil {
			t.Fatal(err)
		}
		_, err = conn.PgConn().CopyFrom(ctx, strings.NewReader("1\t2\n3\tx\n"), "COPY copy_bad FROM STDIN")
		var n int
		qerr := conn.QueryRow(ctx, "SELECT count(*) FROM copy_bad").Scan(&n)
		return []string{first, errString(err), fmt.Sprint(n, qerr)}
	})
	if !strings.Contains(errs[1], "22P02") {
		t.Errorf("bad COPY data: got %q, want SQLSTATE 22P02", errs[1])
	}
}

func TestListenNotify(t *testing.T) {
	p := startProxy(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	proxied := connect(t, p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase))
	direct := connect(t, directDSN(pgcluster.ScramUser, pgcluster.AppDatabase))

	for _, c := range []struct {
		name             string
		listener, sender *pgx.Conn
	}{{"notify direct, listen through proxy", proxied, direct}, {"notify through proxy, listen direct", direct, proxied}} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := c.listener.Exec(ctx, "LISTEN phi_events"); err != nil {
				t.Fatal(err)
			}
			defer c.listener.Exec(ctx, "UNLISTEN phi_events")
			for i := range 3 {
				payload := fmt.Sprintf("payload %d: ünïcode", i)
				if _, err := c.sender.Exec(ctx, "SELECT pg_notify('phi_events', $1)", payload); err != nil {
					t.Fatal(err)
				}
				n, err := c.listener.WaitForNotification(ctx)
				if err != nil {
					t.Fatalf("wait for notification %d: %v", i, err)
				}
				if n.Channel != "phi_events" || n.Payload != payload {
					t.Fatalf("notification %d = %q %q, want phi_events %q", i, n.Channel, n.Payload, payload)
				}
			}
		})
	}
}

// TestCancel cancels a running pg_sleep by cancelling its context: pgx then
// sends a CancelRequest on a new connection to the proxy, which must reach
// the right backend.
func TestCancel(t *testing.T) {
	p := startProxy(t)
	withCancelRequest := func(c *pgx.ConnConfig) {
		c.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
			return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, CancelRequestDelay: 0, DeadlineDelay: 20 * time.Second}
		}
	}
	// A bystander session sleeping at the same time must not be cancelled.
	bystander := connect(t, p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase))
	bystanderDone := make(chan error, 1)
	go func() {
		_, err := bystander.Exec(context.Background(), "SELECT pg_sleep(2)")
		bystanderDone <- err
	}()

	results := both(t, p, func(t *testing.T, conn *pgx.Conn) []string {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := conn.Exec(ctx, "SELECT pg_sleep(30)")
		elapsed := time.Since(start)
		if elapsed > 10*time.Second {
			t.Errorf("cancel took %v", elapsed)
		}
		var pgErr *pgconn.PgError
		code := ""
		if errors.As(err, &pgErr) {
			code = pgErr.Code
		}
		// The connection survives a cancelled statement.
		var one int
		aerr := conn.QueryRow(context.Background(), "SELECT 1").Scan(&one)
		return []string{code, fmt.Sprint(one, aerr)}
	}, withCancelRequest)
	if results[0] != "57014" {
		t.Errorf("cancelled query: SQLSTATE %q, want 57014 (query_canceled)", results[0])
	}
	if err := <-bystanderDone; err != nil {
		t.Errorf("bystander session: %v", err)
	}
}
