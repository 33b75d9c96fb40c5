package pgcluster

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{ServerName: "db.test.internal"})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = c.Stop()
		}
	})

	for _, r := range []Role{ScramUser, MD5User, PasswordUser, TrustUser, Superuser} {
		t.Run(r.Name, func(t *testing.T) {
			conn, err := pgx.Connect(ctx, c.DSN(r, AppDatabase, "verify-full"))
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			defer conn.Close(ctx)
			var who string
			var ssl bool
			if err := conn.QueryRow(ctx, "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&who, &ssl); err != nil {
				t.Fatalf("query: %v", err)
			}
			if who != r.Name || !ssl {
				t.Fatalf("current_user=%q ssl=%v, want %q true", who, ssl, r.Name)
			}
		})
	}

	t.Run("wrong password", func(t *testing.T) {
		bad := ScramUser
		bad.Password = "nope"
		if conn, err := pgx.Connect(ctx, c.DSN(bad, AppDatabase, "require")); err == nil {
			conn.Close(ctx)
			t.Fatal("connected with a wrong password")
		}
	})

	t.Run("server name", func(t *testing.T) {
		conn, err := pgx.Connect(ctx, DSN("localhost", c.Port(), ScramUser, AppDatabase, "verify-full", c.CAFile()))
		if err != nil {
			t.Fatalf("connect as localhost: %v", err)
		}
		conn.Close(ctx)
		if !strings.Contains(strings.Join(c.CA().Cert.Subject.Organization, ","), "phiproxy") {
			t.Errorf("CA subject %v", c.CA().Cert.Subject)
		}
	})

	t.Run("log", func(t *testing.T) {
		conn, err := pgx.Connect(ctx, c.SuperuserDSN(AppDatabase))
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "SELECT $1::text", "marker-7f3a"); err != nil {
			t.Fatalf("exec: %v", err)
		}
		log, err := c.LogContents()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(log), "marker-7f3a") {
			t.Errorf("parameter value not in the server log (log_statement/log_parameter_max_length):\n%s", lastLines(log, 20))
		}
	})

	dir := c.dir
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	stopped = true
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists after Stop (err=%v)", dir, err)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestFindBinDir(t *testing.T) {
	t.Setenv(BinDirEnv, t.TempDir())
	if _, err := FindBinDir(); err == nil || !strings.Contains(err.Error(), "apt-get install -y postgresql") {
		t.Fatalf("FindBinDir with an empty dir: %v, want an error naming the package", err)
	}
}
