package integration

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/novamind/phiproxy/internal/pgcluster"
)

// TestCheckFindsBrokenSetups: phiproxy check passes a good setup and
// fails, naming the fix, for each broken one issue 11 lists: a wrong
// master key, a corrupt keyring, a keyring readable by others, an expired
// certificate, a policy table missing from the database (and with AWS
// KMS, in TestCheckKMS: KMS down, no AWS credentials).
func TestCheckFindsBrokenSetups(t *testing.T) {
	e := newOpsEnv(t, "ops_check", rotationPolicy)
	setupPeople(t, e)
	good := e.run(t, "check", "--config", e.config)
	t.Logf("check of a good setup:\n%s", good.stdout)
	if good.code != 0 || !strings.Contains(good.stdout, "configuration OK") || !strings.Contains(good.stdout, "database ops_check: every policy table is ready") {
		t.Fatalf("check of a good setup: %s", good)
	}

	broken := func(name string, want []string, breakIt func() (restore func())) {
		t.Run(name, func(t *testing.T) {
			restore := breakIt()
			defer restore()
			res := e.run(t, "check", "--config", e.config)
			t.Logf("check:\n%s", res.stdout)
			if res.code != 1 {
				t.Fatalf("check passed a broken setup: %s", res)
			}
			for _, w := range want {
				if !strings.Contains(res.stdout, w) {
					t.Errorf("check output lacks %q:\n%s", w, res.stdout)
				}
			}
		})
	}
	master := filepath.Join(e.dir, "master.key")
	broken("wrong master key", []string{"the keyring does not unwrap", "fix:   the master key must be the one that wrapped the keyring"}, func() func() {
		orig, _ := os.ReadFile(master)
		key := make([]byte, 32)
		rand.Read(key)
		os.WriteFile(master, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600)
		return func() { os.WriteFile(master, orig, 0o600) }
	})
	broken("corrupt keyring", []string{"keys.keyring_file:", "restore the keyring file from its backup"}, func() func() {
		orig, _ := os.ReadFile(e.keyring)
		os.WriteFile(e.keyring, orig[:len(orig)/2], 0o600)
		return func() { os.WriteFile(e.keyring, orig, 0o600) }
	})
	broken("keyring readable by others", []string{"has mode 0644: group or others may read a secret", "fix:   chmod 600 " + e.keyring}, func() func() {
		os.Chmod(e.keyring, 0o644)
		return func() { os.Chmod(e.keyring, 0o600) }
	})
	broken("expired certificate", []string{"listen.tls.cert_file " + filepath.Join(e.dir, "expired.crt") + `: certificate "localhost" expired on`}, func() func() {
		ca, err := pgcluster.NewCA("check test CA", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		e.certFile, e.keyFile = filepath.Join(e.dir, "expired.crt"), filepath.Join(e.dir, "expired.key")
		if err := ca.WriteServerFiles(filepath.Join(e.dir, "ca.crt"), e.certFile, e.keyFile, []string{"localhost"}, -time.Minute); err != nil {
			t.Fatal(err)
		}
		e.writeConfig(t)
		return func() {
			e.certFile, e.keyFile = proxyCertFile, proxyKeyFile
			e.writeConfig(t)
		}
	})
	broken("policy table missing", []string{"database ops_check: public.visits: it does not exist (or the policy misspells its name)", "CREATE TABLE public.visits ("}, func() func() {
		orig := e.policyYAML
		e.policyYAML += strings.TrimPrefix(visitsPolicy, "  tables:\n")
		e.writeConfig(t)
		return func() {
			e.policyYAML = orig
			e.writeConfig(t)
		}
	})
	if res := e.run(t, "check", "--config", e.config); res.code != 0 {
		t.Fatalf("check after restoring the good setup: %s", res)
	}
}

// TestCheckKMS: with an AWS KMS keyring, check unwraps it and proves the
// wrapping key accepts Encrypt; it fails when KMS is down and when there
// are no AWS credentials. keys rewrap to another KMS key names the
// settings to change, and the next rotation wraps under the new key even
// before the configuration names it.
func TestCheckKMS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	emu := kmsStartEmulator(ctx, t)
	keyA, keyB := emu.createKey(ctx, t, "alias/check-a"), emu.createKey(ctx, t, "alias/check-b")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDLOCALKMS")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "local-kms-secret")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")

	e := newOpsEnv(t, "ops_check_kms", rotationPolicy)
	setupPeople(t, e)
	os.Remove(e.keyring)
	e.keysYAML = fmt.Sprintf("keys:\n  keyring_file: keyring.json\n  provider: aws-kms\n  aws_kms:\n    key_id: alias/check-a\n    region: %s\n    endpoint: %s\n    timeout: 2s\n", kmsRegion, emu.endpoint)
	e.writeConfig(t)
	e.mustRun(t, "keys", "init", "--config", e.config)
	res := e.mustRun(t, "check", "--config", e.config)
	if !strings.Contains(res.stdout, "unwrapped by aws-kms "+keyA) || !strings.Contains(res.stdout, "KMS key "+keyA+" accepts Encrypt") {
		t.Fatalf("check with KMS: %s", res)
	}

	// rewrap to key B; the configuration still names key A.
	rw := e.mustRun(t, "keys", "rewrap", "--config", e.config, "--provider", "aws-kms", "--kms-key", "alias/check-b")
	if !strings.Contains(rw.stdout, "keys.aws_kms.key_id: alias/check-b") || strings.Contains(rw.stdout, "keys.provider:") {
		t.Errorf("rewrap does not name exactly the setting to change: %s", rw)
	}
	e.mustRun(t, "keys", "rotate", "--config", e.config)
	for _, k := range e.keyringFile(t).DataKeys {
		if k.MasterKeyID != keyB {
			t.Errorf("after rewrap to key B and a rotation, data key %d is wrapped by %s, want %s", k.ID, k.MasterKeyID, keyB)
		}
	}
	if res := e.mustRun(t, "check", "--config", e.config); !strings.Contains(res.stdout, "KMS key "+keyB+" accepts Encrypt") {
		t.Errorf("check after rewrap: %s", res)
	}

	t.Run("no AWS credentials", func(t *testing.T) {
		t.Setenv("AWS_ACCESS_KEY_ID", "")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "")
		res := e.run(t, "check", "--config", e.config)
		if res.code != 1 || !strings.Contains(res.stdout, "the keyring could not be unwrapped") || !strings.Contains(res.stdout, "AWS credentials are available") {
			t.Fatalf("check without AWS credentials: %s", res)
		}
	})
	t.Run("KMS down", func(t *testing.T) {
		emu.stop(t)
		res := e.run(t, "check", "--config", e.config)
		if res.code != 1 || !strings.Contains(res.stdout, "the keyring could not be unwrapped") || !strings.Contains(res.stdout, "check that KMS is reachable from here") {
			t.Fatalf("check with KMS down: %s", res)
		}
	})
}
