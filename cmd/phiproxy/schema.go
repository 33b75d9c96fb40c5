package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/jackc/pgx/v5"
	"github.com/novamind/phiproxy/policy"
)

const schemaUsage = `Usage: phiproxy schema --config FILE [--database DB] [--dsn DSN]

Compares the policy with each governed database's catalog and prints, as
one psql script per database, the DDL that makes each policy table ready:

  Step 1, before phiproxy serves the table and before migrate encrypt:
    missing tables (CREATE TABLE), storage-type changes of PHI columns
    (ALTER COLUMN ... TYPE text USING <the value's text form>), blind-index
    columns and their btree indexes, and the removal of indexes, CHECK
    constraints and defaults that read PHI columns as plaintext.
  Step 2, once phiproxy migrate encrypt has encrypted every value: the
    ciphertext CHECK constraints, added NOT VALID and then validated.

It changes nothing itself. Exit status: 0 when nothing is missing, 1 when
something is (the script is printed), 2 for a usage mistake.

` + dbFlagsHelp

// errSchemaProblems: schema or check found problems (already printed).
var errSchemaProblems = errors.New("the database is not ready for the policy")

// runSchema implements `phiproxy schema`.
func runSchema(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("schema")
	path := fs.String("config", os.Getenv(envConfig), "")
	var db dbFlags
	db.register(fs)
	pos, err := parseArgs(fs, args, schemaUsage)
	if err != nil {
		return err
	}
	if err := noArgs("schema", pos); err != nil {
		return err
	}
	if err := needConfig("schema", *path); err != nil {
		return err
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	missing := 0
	for _, name := range db.databases(cfg.policy) {
		problems, dbname, err := diffDatabase(ctx, cfg, db, name, "schema")
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "-- phiproxy schema: database %s, policy of %s\n", dbname, cfg.path)
		if len(problems) == 0 {
			fmt.Fprintln(stdout, "-- nothing missing: every policy table is ready")
			continue
		}
		missing += len(problems)
		fmt.Fprintf(stdout, "-- %d problems; connect with: psql --dbname=%s\n", len(problems), dbname)
		fmt.Fprint(stdout, policy.Script(problems))
	}
	if missing > 0 {
		return fmt.Errorf("%w: %d problems (the DDL is printed above)", errSchemaProblems, missing)
	}
	return nil
}

// diffDatabase reads one database's catalog and compares it with the
// policy. It returns the database's name as the server reports it.
func diffDatabase(ctx context.Context, cfg *config, f dbFlags, db, cmd string) ([]policy.Problem, string, error) {
	conn, err := connectDB(ctx, cfg, f, db, cmd)
	if err != nil {
		return nil, db, err
	}
	defer conn.Close(context.Background())
	live, err := readCatalog(ctx, conn, cfg.policy)
	if err != nil {
		return nil, conn.Config().Database, fmt.Errorf("database %s: %w", conn.Config().Database, err)
	}
	problems := policy.Diff(cfg.policy, live)
	var prosrc, triggers string
	if err := conn.QueryRow(ctx, "SELECT "+policy.EpochStateSQL, pgx.QueryExecModeSimpleProtocol).Scan(&prosrc, &triggers); err != nil {
		return nil, conn.Config().Database, fmt.Errorf("database %s: read the catalog epoch: %w", conn.Config().Database, dbError(err))
	}
	if !policy.EpochInstalled(prosrc, triggers) {
		problems = append([]policy.Problem{policy.EpochProblem()}, problems...)
	}
	return problems, conn.Config().Database, nil
}
