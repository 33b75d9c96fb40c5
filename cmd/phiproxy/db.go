package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
)

// The commands that read or change the database itself (schema, check,
// migrate, keys usage and retire) connect directly to PostgreSQL, not
// through the proxy: migrate writes ciphertext the proxy would encrypt
// again, and the others read what PostgreSQL stores.

// dbFlagsHelp documents dbFlags for the commands' help texts.
const dbFlagsHelp = `Connection (directly to PostgreSQL, not through the proxy):
  By default the host, port and TLS of upstream: in --config (verified as
  the proxy verifies them), and the role, password and database of the
  usual libpq variables: PGUSER, PGPASSWORD or PGPASSFILE (~/.pgpass),
  PGDATABASE. PGHOST, PGPORT and PGSSL* are not read.
  --database DB  the database (default: each of policy.databases, else
                 PGDATABASE, else the role's name)
  --dsn DSN      a libpq connection string or URL used as it is, instead
                 of upstream: and the PG* variables (--database still
                 overrides its database)
`

// dbFlags select and authenticate the direct connection.
type dbFlags struct {
	dsn, database string
}

func (f *dbFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.dsn, "dsn", "", "")
	fs.StringVar(&f.database, "database", "", "")
}

// databases returns the databases a command covers: --database, else
// policy.databases, else "" (the connection's default).
func (f dbFlags) databases(pol *policy.Policy) []string {
	if f.database != "" {
		return []string{f.database}
	}
	if dbs := pol.Databases(); len(dbs) > 0 {
		return dbs
	}
	return []string{""}
}

// oneDatabase returns the database of a command that works on one: as
// databases, but policy.databases must then name exactly one.
func (f dbFlags) oneDatabase(cmd string, pol *policy.Policy) (string, error) {
	dbs := f.databases(pol)
	if len(dbs) > 1 {
		return "", fmt.Errorf("%w: %s works on one database: name it with --database (policy.databases lists %s)", errUsage, cmd, strings.Join(dbs, ", "))
	}
	return dbs[0], nil
}

// sessionParams are the startup parameters of every direct connection:
// policy.SessionSettings, under which PostgreSQL's text output is what the
// proxy canonicalizes, and the command's name for pg_stat_activity.
func sessionParams(cmd string) map[string]string {
	p := map[string]string{"application_name": "phiproxy " + cmd}
	for _, s := range policy.SessionSettings {
		p[s[0]] = s[1]
	}
	if pinsSearchPath[cmd] {
		p["search_path"] = "pg_catalog, pg_temp"
	}
	return p
}

// pinsSearchPath are the commands whose connections search pg_catalog
// first, whatever search_path the database or the role sets: they only
// read (the catalog; keys, ciphertext headers), naming their tables with
// their schemas, and their queries write operators and functions bare.
// The owner of a database (no superuser) may set its search_path to put
// a schema of theirs first, with an = or a get_byte of their own there:
// run by a superuser, as `phiproxy schema` is, the owner's function would
// run with the superuser's rights, and could make `keys usage` miss the
// values of a key about to be retired. `migrate` keeps the session's
// search_path: the triggers and defaults of the tables it writes may
// need it.
var pinsSearchPath = map[string]bool{"schema": true, "check": true, "keys usage": true, "keys retire": true}

// connectDB opens a direct connection to database db ("" for the
// default) for the command cmd.
func connectDB(ctx context.Context, cfg *config, f dbFlags, db, cmd string) (*pgx.Conn, error) {
	cc, err := dbConfig(cfg, f, db)
	if err != nil {
		return nil, err
	}
	for k, v := range sessionParams(cmd) {
		cc.RuntimeParams[k] = v
	}
	cctx, cancel := context.WithTimeout(ctx, cfg.file.Proxy.Upstream.ConnectTimeout+5*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cc)
	if err != nil {
		return nil, fmt.Errorf("connect to database %q at %s: %w", cc.Database, cc.Host, dbError(err))
	}
	return conn, nil
}

// dbConfig builds the connection settings (see dbFlagsHelp).
func dbConfig(cfg *config, f dbFlags, db string) (*pgx.ConnConfig, error) {
	if f.dsn != "" {
		cc, err := pgx.ParseConfig(f.dsn)
		if err != nil {
			return nil, fmt.Errorf("%w: --dsn: %v", errUsage, err)
		}
		if db != "" {
			cc.Database = db
		}
		return cc, nil
	}
	up := cfg.file.Proxy.Upstream
	host, port, err := net.SplitHostPort(up.Address)
	if err != nil {
		return nil, fmt.Errorf("upstream.address %q: %w", up.Address, err)
	}
	// Only the host and port are given: the PG* variables fill in the
	// role, password, passfile and database. TLS is set below.
	cc, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%s sslmode=disable", quoteDSN(host), quoteDSN(port)))
	if err != nil {
		return nil, fmt.Errorf("connection settings: %w", err)
	}
	if db != "" {
		cc.Database = db
	}
	tlsCfg, err := upstreamTLS(up)
	if err != nil {
		return nil, err
	}
	cc.TLSConfig = tlsCfg
	cc.Fallbacks = nil // never a plaintext retry
	return cc, nil
}

// upstreamTLS is the TLS client the proxy uses towards PostgreSQL, for
// the same upstream settings: nil for mode disable; verify-full checks the
// chain and upstream.tls.server_name (default: the address's host);
// verify-ca the chain only; require nothing.
func upstreamTLS(up proxy.UpstreamConfig) (*tls.Config, error) {
	c := up.TLS
	if c.Mode == proxy.TLSModeDisable {
		return nil, nil
	}
	name := c.ServerName
	if name == "" {
		name, _, _ = net.SplitHostPort(up.Address)
	}
	cfg := &tls.Config{ServerName: name, MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("upstream.tls.ca_file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("upstream.tls.ca_file: no PEM certificates in %s", c.CAFile)
		}
	}
	switch c.Mode {
	case proxy.TLSModeVerifyFull, "":
	case proxy.TLSModeVerifyCA:
		roots := cfg.RootCAs
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the server presented no certificate")
			}
			opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
			for _, ic := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(ic)
			}
			_, err := cs.PeerCertificates[0].Verify(opts)
			return err
		}
	case proxy.TLSModeRequire:
		cfg.InsecureSkipVerify = true
	default:
		return nil, fmt.Errorf("upstream.tls.mode %q unknown", c.Mode)
	}
	return cfg, nil
}

// quoteDSN quotes a keyword/value connection string value.
func quoteDSN(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// readCatalog reads the policy's tables from the database of conn.
func readCatalog(ctx context.Context, conn *pgx.Conn, pol *policy.Policy) (policy.LiveCatalog, error) {
	rows, err := conn.Query(ctx, policy.CatalogSQL(pol), pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return nil, fmt.Errorf("read catalog: %w", dbError(err))
	}
	var raw [][]byte
	for rows.Next() {
		raw = append(raw, append([]byte(nil), rows.RawValues()[0]...))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read catalog: %w", dbError(err))
	}
	return policy.ParseCatalog(raw)
}

// dbError keeps a server error's SQLSTATE and message but not its DETAIL
// or WHERE, which can quote row values; for data exceptions (class 22)
// and integrity violations (class 23), whose messages can quote the
// offending value, it keeps only the SQLSTATE and the names of the
// objects concerned. The result is a *serverError.
func dbError(err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	switch {
	case strings.HasPrefix(pe.Code, "22"):
		return &serverError{pe.Code, fmt.Sprintf("server error %s (a data exception; the message is withheld because it may quote a value)%s", pe.Code, pgObjects(pe))}
	case strings.HasPrefix(pe.Code, "23"):
		return &serverError{pe.Code, fmt.Sprintf("server error %s (an integrity violation)%s", pe.Code, pgObjects(pe))}
	}
	return &serverError{pe.Code, fmt.Sprintf("server error %s: %s", pe.Code, pe.Message)}
}

// serverError is a server error as dbError renders it, with its SQLSTATE.
type serverError struct {
	code, msg string
}

func (e *serverError) Error() string { return e.msg }

// isConstraintError reports an integrity violation (SQLSTATE class 23).
func isConstraintError(err error) bool {
	var se *serverError
	return errors.As(err, &se) && strings.HasPrefix(se.code, "23")
}

func pgObjects(pe *pgconn.PgError) string {
	var parts []string
	for _, kv := range [][2]string{{"table", pe.TableName}, {"column", pe.ColumnName}, {"constraint", pe.ConstraintName}} {
		if kv[1] != "" {
			parts = append(parts, kv[0]+" "+kv[1])
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return ": " + strings.Join(parts, ", ")
}

// dbName is a database for messages: its name, or "(default)".
func dbName(db string) string {
	if db == "" {
		return "(default database)"
	}
	return db
}
