package differential

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/policy"
)

// env is what the tests of this package share, built once by TestMain.
type env struct {
	// encCluster holds only what goes through the proxy, so the leak check
	// can search all of it; plainCluster holds the plaintext twins.
	encCluster, plainCluster *pgcluster.Cluster
	dir                      string // TLS files and keyring, removed at the end
	proxyCA                  string // the CA of the proxy's certificate
	proxyCert, proxyKey      string
	seedPol, pol             *policy.Policy
	schema                   *schema
}

// newEnv starts both clusters (concurrently) and writes the proxy's TLS
// files. On error nothing is left running.
func newEnv(ctx context.Context) (_ *env, err error) {
	e := &env{}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if e.seedPol, e.pol, err = policies(); err != nil {
		return nil, err
	}
	e.schema = newSchema(e.pol)
	if e.dir, err = os.MkdirTemp("", "phiproxy-differential-"); err != nil {
		return nil, err
	}
	ca, err := pgcluster.NewCA("phiproxy differential CA", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	e.proxyCA = filepath.Join(e.dir, "proxy-ca.crt")
	e.proxyCert, e.proxyKey = filepath.Join(e.dir, "proxy.crt"), filepath.Join(e.dir, "proxy.key")
	if err := ca.WriteServerFiles(e.proxyCA, e.proxyCert, e.proxyKey, []string{"localhost", "127.0.0.1"}, 24*time.Hour); err != nil {
		return nil, err
	}
	errs := make(chan error, 2)
	for _, c := range []**pgcluster.Cluster{&e.encCluster, &e.plainCluster} {
		go func() {
			var err error
			*c, err = pgcluster.Start(ctx, pgcluster.Options{ServerName: upstreamServerName})
			errs <- err
		}()
	}
	return e, errors.Join(<-errs, <-errs)
}

// close stops the clusters and removes the files.
func (e *env) close() {
	for _, c := range []*pgcluster.Cluster{e.encCluster, e.plainCluster} {
		if c != nil {
			if err := c.Stop(); err != nil {
				fmt.Fprintln(os.Stderr, "differential:", err)
			}
		}
	}
	if e.dir != "" {
		os.RemoveAll(e.dir)
	}
}

// createDatabase creates db in c, owned by the SCRAM role, with the
// schema of one side.
func (e *env) createDatabase(ctx context.Context, c *pgcluster.Cluster, db string, encrypted bool) error {
	su, err := pgx.Connect(ctx, c.SuperuserDSN("postgres"))
	if err != nil {
		return err
	}
	defer su.Close(ctx)
	if _, err := su.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s OWNER %s", db, pgcluster.ScramUser.Name)); err != nil {
		return fmt.Errorf("create database %s: %w", db, err)
	}
	owner, err := pgx.Connect(ctx, c.DSN(pgcluster.ScramUser, db, "verify-full"))
	if err != nil {
		return err
	}
	defer owner.Close(ctx)
	if _, err := owner.Exec(ctx, schemaSQL(e.seedPol, e.pol, encrypted)); err != nil {
		return fmt.Errorf("schema of %s: %w", db, err)
	}
	return nil
}

// newKeyring creates a keyring wrapped by a random local master key.
func (e *env) newKeyring(ctx context.Context) (*crypto.Keyring, error) {
	master := make([]byte, 32)
	rand.Read(master)
	prov, err := crypto.NewLocalProvider(master)
	if err != nil {
		return nil, err
	}
	return crypto.CreateKeyring(ctx, filepath.Join(e.dir, "keyring.json"), prov)
}

// directSide is a side connected straight to db in c.
func directSide(ctx context.Context, name string, c *pgcluster.Cluster, db string) (*side, error) {
	sd := &side{name: name, dsn: c.DSN(pgcluster.ScramUser, db, "verify-full")}
	return sd, sd.connect(ctx)
}

// proxySide is a side connected through the proxy on port to db.
func (e *env) proxySide(ctx context.Context, port int, db string) (*side, error) {
	sd := &side{name: "proxy", dsn: pgcluster.DSN("localhost", port, pgcluster.ScramUser, db, "verify-full", e.proxyCA)}
	return sd, sd.connect(ctx)
}

// checkpoint makes c write its dirty buffers to the data files, for the
// leak check.
func checkpoint(ctx context.Context, c *pgcluster.Cluster) error {
	su, err := pgx.Connect(ctx, c.SuperuserDSN("postgres"))
	if err != nil {
		return err
	}
	defer su.Close(ctx)
	_, err = su.Exec(ctx, "CHECKPOINT")
	return err
}
