package main

// The COPY workload (issue 10, item 6): COPY FROM STDIN of N patients of
// the seed schema, 6 PHI values of which 2 are indexed (ssn and email,
// each with its exact and its normalized blind index), into the encrypted
// table through a PHI-enforcing phiproxy, against the same COPY into the
// plaintext twin directly (without and with TLS); then COPY TO STDOUT of
// them all, each way. Each round empties the tables first; the targets
// take turns within a round.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/internal/seed"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/proxy/phi"
)

// copyColumnList is the COPY's column list: 6 PHI columns, ssn and email
// indexed.
const copyColumnList = "(first_name, last_name, date_of_birth, ssn, email, city)"

// rawColumns are the columns the server gets for it, blind indexes
// included.
const rawColumns = "(first_name, last_name, date_of_birth, ssn, email, city, ssn_bidx, ssn_bidx_digits, email_bidx, email_bidx_ci)"

// copyTarget is one way to the patients table.
type copyTarget struct {
	name, dsn, db string
	// raw: load what the previous round through the proxy stored, all
	// columns, directly.
	raw     bool
	in, out []time.Duration // per round
	cpu     []time.Duration // this process's CPU (the proxy's) per round, in and out
}

// benchCopy runs the COPY workload and returns the function printing it.
func benchCopy(ctx context.Context, cluster *pgcluster.Cluster, o options) (func() error, error) {
	fmt.Printf("COPY workload: %d patients, %d round(s) ...\n", o.copyRows, o.rounds)
	su, err := pgx.Connect(ctx, cluster.SuperuserDSN("postgres"))
	if err != nil {
		return nil, err
	}
	defer su.Close(ctx)
	owner := pgcluster.ScramUser
	pol, err := seed.Policy()
	if err != nil {
		return nil, err
	}
	const encrypted, plain = "copy_encrypted", "copy_plain"
	for db, schema := range map[string]string{encrypted: seed.SchemaSQL(pol, false), plain: phiPlainSchema} {
		if _, err := su.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s OWNER %s", db, owner.Name)); err != nil {
			return nil, err
		}
		c, err := pgx.Connect(ctx, cluster.DSN(owner, db, "verify-full"))
		if err != nil {
			return nil, err
		}
		_, err = c.Exec(ctx, schema)
		c.Close(ctx)
		if err != nil {
			return nil, fmt.Errorf("schema of %s: %w", db, err)
		}
	}
	dir, err := os.MkdirTemp("", "phiproxy-bench-copy-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	governed, err := seed.PolicyFor(encrypted)
	if err != nil {
		return nil, err
	}
	kr, err := newKeyring(ctx, dir)
	if err != nil {
		return nil, err
	}
	eng, err := phi.New(governed, phi.KeyringKeys(kr), prometheus.NewRegistry(), phi.Config{})
	if err != nil {
		return nil, err
	}
	srv, err := startProxy(ctx, cluster, prometheus.NewRegistry(), proxy.WithInterceptor(eng))
	if err != nil {
		return nil, err
	}
	defer srv.Close()

	data := copyData(o.copyRows, o.copySorted)
	var rawData []byte
	targets := []*copyTarget{
		{name: "plaintext direct", dsn: cluster.DSN(owner, plain, "disable"), db: plain},
		{name: "plaintext direct TLS", dsn: cluster.DSN(owner, plain, "require"), db: plain},
		{name: "encrypted via phiproxy", dsn: pgcluster.DSN("127.0.0.1", proxyPort(srv), owner, encrypted, "require", ""), db: encrypted},
		// The relay alone: the database the policy does not govern.
		{name: "plaintext via phiproxy", dsn: pgcluster.DSN("127.0.0.1", proxyPort(srv), owner, plain, "require", ""), db: plain},
		// The server's own share: the rows phiproxy wrote (ciphertext and
		// blind indexes), loaded directly.
		{name: "its ciphertext, direct TLS", dsn: cluster.DSN(owner, encrypted, "require"), db: encrypted, raw: true},
	}
	var profiles []string
	for r := range o.rounds {
		for _, t := range targets {
			if t.raw {
				// What the round through the proxy left in the table.
				var b bytes.Buffer
				c, err := pgconn.Connect(ctx, cluster.DSN(owner, encrypted, "disable"))
				if err != nil {
					return nil, err
				}
				_, err = c.CopyTo(ctx, &b, "COPY patients "+rawColumns+" TO STDOUT")
				c.Close(ctx)
				if err != nil {
					return nil, err
				}
				rawData = b.Bytes()
			}
			stop := func() {}
			if o.cpuprofile != "" && t.db == encrypted && !t.raw {
				f := fmt.Sprintf("%s.copy.%d", o.cpuprofile, r+1)
				if stop, err = startProfile(f); err != nil {
					return nil, err
				}
				profiles = append(profiles, f)
			}
			err := t.round(ctx, cluster, data, rawData, o.copyRows)
			stop()
			if err != nil {
				return nil, fmt.Errorf("%s, round %d: %w", t.name, r+1, err)
			}
		}
	}
	if err := checkCopy(ctx, cluster, encrypted, targets[2].dsn); err != nil {
		return nil, err
	}
	return func() error {
		if err := printCopy(targets, o); err != nil {
			return err
		}
		if o.cpuprofile != "" {
			printProfileTop("phiproxy during its COPY rounds", o.cpuprofile, profiles...)
		}
		return nil
	}, nil
}

// copyData is n rows of the COPY in text format. Unless sorted, the
// indexed values (ssn, email) come in no particular order, as real ones
// do; sorted, each comes after the one before in its index (person1,
// person2, ...), which flatters the plaintext btrees (the blind indexes are
// in random order either way).
func copyData(n int, sorted bool) []byte {
	var b bytes.Buffer
	for i := range n {
		h := uint32(i)
		if !sorted {
			h = uint32(i)*2654435761 ^ 0x5bd1e995 // a permutation of the 32-bit values
		}
		fmt.Fprintf(&b, "First%d\tLast%d\t19%02d-%02d-%02d\t%03d-%02d-%04d\tp%010d.%d@example.org\tCity%d\n",
			i, i, 30+i%70, 1+i%12, 1+i%28, 100+h%900, h/900%100, h/90000%10000, h, i, i%5000)
	}
	return b.Bytes()
}

// round empties the target's table, loads the rows and reads them back,
// recording the times and, through the proxy, this process's CPU.
func (t *copyTarget) round(ctx context.Context, cluster *pgcluster.Cluster, data, rawData []byte, n int) error {
	su, err := pgx.Connect(ctx, cluster.SuperuserDSN(t.db))
	if err != nil {
		return err
	}
	_, err = su.Exec(ctx, "TRUNCATE patients CASCADE; CHECKPOINT")
	su.Close(ctx)
	if err != nil {
		return err
	}
	c, err := pgconn.Connect(ctx, t.dsn)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	sql := "COPY patients " + copyColumnList
	if t.raw {
		sql, data = "COPY patients "+rawColumns, rawData
	}
	self := os.Getpid()
	cpu0, _ := cpuTime(self)
	start := time.Now()
	tag, err := c.CopyFrom(ctx, bytes.NewReader(data), sql+" FROM STDIN")
	if err != nil {
		return err
	}
	if tag.RowsAffected() != int64(n) {
		return fmt.Errorf("COPY FROM: %s, want %d rows", tag, n)
	}
	t.in = append(t.in, time.Since(start))
	cpu1, _ := cpuTime(self)
	// The first read of new rows writes their hint bits; VACUUM does it
	// beforehand, so that COPY TO measures reading.
	if su, err = pgx.Connect(ctx, cluster.SuperuserDSN(t.db)); err != nil {
		return err
	}
	_, err = su.Exec(ctx, "VACUUM patients")
	su.Close(ctx)
	if err != nil {
		return err
	}
	cpuIn := cpu1 - cpu0
	cpu1, _ = cpuTime(self)
	start = time.Now()
	tag, err = c.CopyTo(ctx, io.Discard, sql+" TO STDOUT")
	if err != nil {
		return err
	}
	if tag.RowsAffected() != int64(n) {
		return fmt.Errorf("COPY TO: %s, want %d rows", tag, n)
	}
	t.out = append(t.out, time.Since(start))
	cpu2, _ := cpuTime(self)
	t.cpu = append(t.cpu, cpuIn, cpu2-cpu1)
	return nil
}

// checkCopy makes sure the benchmark measures what it claims: PostgreSQL
// holds ciphertext and blind indexes, and the proxy finds a patient by
// email.
func checkCopy(ctx context.Context, cluster *pgcluster.Cluster, db, proxyDSN string) error {
	d, err := pgx.Connect(ctx, cluster.SuperuserDSN(db))
	if err != nil {
		return err
	}
	defer d.Close(ctx)
	var stored, bidx string
	if err := d.QueryRow(ctx, "SELECT email, email_bidx FROM patients LIMIT 1").Scan(&stored, &bidx); err != nil {
		return err
	}
	if !strings.HasPrefix(stored, "phi1:") || bidx == "" {
		return fmt.Errorf("check: PostgreSQL holds email %.20q with blind index %q; want ciphertext and an index", stored, bidx)
	}
	c, err := pgx.Connect(ctx, proxyDSN)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	var first string
	email := strings.Split(strings.Split(string(copyData(8, false)), "\n")[7], "\t")[4]
	if err := c.QueryRow(ctx, "SELECT first_name FROM patients WHERE email = $1", email).Scan(&first); err != nil || first != "First7" {
		return fmt.Errorf("check through phiproxy: first_name %q, %v", first, err)
	}
	fmt.Printf("check: PostgreSQL stores %.24s... and email_bidx %.16s...; through phiproxy the patient is found by email\n", stored, bidx)
	return nil
}

// printCopy prints rows per second of each target (the best round), the
// ratio to plaintext direct, and the proxy's CPU per row.
func printCopy(targets []*copyTarget, o options) error {
	best := func(ds []time.Duration) time.Duration {
		m := ds[0]
		for _, d := range ds[1:] {
			m = min(m, d)
		}
		return m
	}
	rate := func(d time.Duration) float64 { return float64(o.copyRows) / d.Seconds() }
	order := "in no particular order"
	if o.copySorted {
		order = "sorted"
	}
	fmt.Printf("\nCOPY of %d patients (6 PHI values, 2 indexed: 4 blind indexes; ssn and email %s), text format, best of %d round(s)\n", o.copyRows, order, o.rounds)
	fmt.Printf("  %-28s %12s %6s %9s %12s %6s %9s\n", "target", "FROM rows/s", "ratio", "ratio TLS", "TO rows/s", "ratio", "ratio TLS")
	base, baseTLS := targets[0], targets[1]
	for _, t := range targets {
		in, out := rate(best(t.in)), rate(best(t.out))
		fmt.Printf("  %-28s %12.0f %6.2f %9.2f %12.0f %6.2f %9.2f\n", t.name, in,
			in/rate(best(base.in)), in/rate(best(baseTLS.in)), out, out/rate(best(base.out)), out/rate(best(baseTLS.out)))
	}
	p := targets[2]
	var in, out time.Duration
	for i := 0; i+1 < len(p.cpu); i += 2 {
		in, out = in+p.cpu[i], out+p.cpu[i+1]
	}
	rounds := float64(len(p.cpu) / 2)
	fmt.Printf("  this process's CPU per row through phiproxy (the proxy and the client's TLS and COPY): FROM %.1f µs, TO %.1f µs\n",
		float64(in.Microseconds())/rounds/float64(o.copyRows), float64(out.Microseconds())/rounds/float64(o.copyRows))
	return nil
}
