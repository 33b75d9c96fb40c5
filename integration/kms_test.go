package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/crypto/awskms"
)

// kmsEmulatorModule is the pinned local-kms emulator, built from the Go
// module proxy.
const (
	kmsEmulatorModule = "github.com/nsmithuk/local-kms"
	kmsEmulatorVer    = "v0.0.0-20260228092603-2a5e92d09ab6"
	kmsRegion         = "us-east-1"
	kmsAccount        = "111122223333"
)

// TestKMSKeyring drives the keyring through the real aws-sdk-go-v2 KMS
// client against the local-kms emulator: init, rotate, rewrap KMS → local →
// another KMS key, reopening from the file each time, an encryption-context
// mismatch refused by KMS, and KMS stopped after startup.
func TestKMSKeyring(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	emu := kmsStartEmulator(ctx, t)
	keyA, keyB := emu.createKey(ctx, t, "alias/phiproxy-a"), emu.createKey(ctx, t, "alias/phiproxy-b")

	// The provider is built the way `phiproxy serve` and `keys` build it:
	// the standard credential chain, a region and an endpoint.
	kmsProvider := func(keyID string) *awskms.Provider {
		t.Helper()
		t.Setenv("AWS_ACCESS_KEY_ID", "AKIDLOCALKMS")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "local-kms-secret")
		t.Setenv("AWS_SESSION_TOKEN", "")
		t.Setenv("AWS_PROFILE", "")
		t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
		t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
		t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
		p, err := awskms.NewFromConfig(ctx, crypto.AWSKMSConfig{KeyID: keyID, Region: kmsRegion, Endpoint: emu.endpoint, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	path := filepath.Join(t.TempDir(), "keyring.json")
	column, group := "public.patients.email", "public.patients.email"
	norm := []string{"trim", "lower"}

	// init under KMS key A.
	kr, err := crypto.CreateKeyring(ctx, path, kmsProvider("alias/phiproxy-a"))
	if err != nil {
		t.Fatalf("init: %v", err)
	}
	for _, k := range kr.File().DataKeys {
		if k.Provider != crypto.ProviderAWSKMS || k.MasterKeyID != keyA {
			t.Fatalf("data key %d wrapped by %s %s, want %s", k.ID, k.Provider, k.MasterKeyID, keyA)
		}
	}
	c := kmsCipher(t, kr, column)
	v1, _ := c.SealText(nil, []byte("alice@example.com"))
	idx := kmsIndex(t, kr, group, norm, "Alice@Example.com")

	// rotate and reload.
	if _, err := kr.Rotate(ctx); err != nil {
		t.Fatalf("rotate: %v", err)
	}
	if err := kr.Save(path); err != nil {
		t.Fatal(err)
	}
	kr, err = crypto.OpenKeyring(ctx, path, kmsProvider("alias/phiproxy-a"))
	if err != nil {
		t.Fatalf("reopen after rotate: %v", err)
	}
	if kr.ActiveKeyID() != 2 {
		t.Fatalf("active key %d after rotate", kr.ActiveKeyID())
	}
	v2, _ := kmsCipher(t, kr, column).Seal(nil, []byte("bob@example.com"))
	kmsCheck(t, kr, column, map[string][]byte{"alice@example.com": v1, "bob@example.com": v2})

	// rewrap KMS → local, reload with the local master key only.
	master := make([]byte, crypto.KeySize)
	for i := range master {
		master[i] = byte(i * 7)
	}
	local, err := crypto.NewLocalProvider(master)
	if err != nil {
		t.Fatal(err)
	}
	if err := kr.Rewrap(ctx, local); err != nil {
		t.Fatalf("rewrap to local: %v", err)
	}
	if err := kr.Save(path); err != nil {
		t.Fatal(err)
	}
	kr, err = crypto.OpenKeyring(ctx, path, local)
	if err != nil {
		t.Fatalf("reopen with local after rewrap: %v", err)
	}
	kmsCheck(t, kr, column, map[string][]byte{"alice@example.com": v1, "bob@example.com": v2})
	if _, err := crypto.OpenKeyring(ctx, path, kmsProvider("alias/phiproxy-a")); err == nil {
		t.Fatal("a local keyring opened with the KMS provider")
	}

	// rewrap local → KMS key B, reload.
	if err := kr.Rewrap(ctx, kmsProvider("alias/phiproxy-b")); err != nil {
		t.Fatalf("rewrap to KMS: %v", err)
	}
	if err := kr.Save(path); err != nil {
		t.Fatal(err)
	}
	kr, err = crypto.OpenKeyring(ctx, path, kmsProvider("alias/phiproxy-b"))
	if err != nil {
		t.Fatalf("reopen with KMS after rewrap: %v", err)
	}
	if got := kr.File().IndexRoot.MasterKeyID; got != keyB {
		t.Fatalf("root key wrapped by %s, want %s", got, keyB)
	}
	kmsCheck(t, kr, column, map[string][]byte{"alice@example.com": v1, "bob@example.com": v2})
	if got := kmsIndex(t, kr, group, norm, "  alice@example.com"); !bytes.Equal(got, idx) {
		t.Fatal("blind index changed across rotate and rewraps")
	}

	// KMS enforces the encryption context: a keyring id edited in the file
	// makes every unwrap fail.
	f, err := crypto.ReadKeyringFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f.ID = "0000000000000000000000000000dead"
	if _, err := crypto.UnwrapKeyring(ctx, f, kmsProvider("")); !errors.Is(err, crypto.ErrUnwrap) {
		t.Fatalf("unwrap with another encryption context: %v", err)
	}

	// KMS goes away after startup: traffic continues, a new startup fails.
	emu.stop(t)
	c = kmsCipher(t, kr, column)
	v3, err := c.SealText(nil, []byte("carol@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	kmsCheck(t, kr, column, map[string][]byte{"alice@example.com": v1, "bob@example.com": v2, "carol@example.com": v3})
	if got := kmsIndex(t, kr, group, norm, "ALICE@example.com "); !bytes.Equal(got, idx) {
		t.Fatal("blind index changed after KMS stopped")
	}
	start := time.Now()
	_, err = crypto.OpenKeyring(ctx, path, kmsProvider("alias/phiproxy-b"))
	if err == nil {
		t.Fatal("keyring opened with KMS down")
	}
	t.Logf("startup with KMS down fails after %v: %v", time.Since(start).Round(time.Millisecond), err)
	if time.Since(start) > time.Minute {
		t.Fatal("startup with KMS down took too long to fail")
	}
}

func kmsCipher(t *testing.T, kr *crypto.Keyring, column string) *crypto.ColumnCipher {
	t.Helper()
	c, err := kr.Cipher(column)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func kmsIndex(t *testing.T, kr *crypto.Keyring, group string, norm []string, v string) []byte {
	t.Helper()
	ix, err := kr.Indexer(group, norm, 0)
	if err != nil {
		t.Fatal(err)
	}
	return ix.AppendText(nil, []byte(v))
}

func kmsCheck(t *testing.T, kr *crypto.Keyring, column string, want map[string][]byte) {
	t.Helper()
	c := kmsCipher(t, kr, column)
	for plain, env := range want {
		got, err := c.Open(nil, env)
		if err != nil || string(got) != plain {
			t.Fatalf("open %s value: %v", column, err)
		}
	}
}

// kmsEmulator is a running local-kms process.
type kmsEmulator struct {
	endpoint string
	client   *kms.Client
	cmd      *exec.Cmd
	done     chan struct{}
	log      *kmsLog
}

// kmsLog collects the emulator's output for failure messages.
type kmsLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *kmsLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *kmsLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// kmsEmulatorBinary builds local-kms once into the user cache directory
// (os.UserCacheDir()/phiproxy/bin/local-kms@VERSION) and returns its path.
// It fails the test, never skips, when it cannot.
func kmsEmulatorBinary(ctx context.Context, t *testing.T) string {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatalf("local-kms: no cache directory: %v", err)
	}
	dir := filepath.Join(cache, "phiproxy", "bin", "local-kms@"+kmsEmulatorVer)
	bin := filepath.Join(dir, "local-kms")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("local-kms: %v", err)
	}
	t.Logf("building %s@%s (once; about 30 s)", kmsEmulatorModule, kmsEmulatorVer)
	bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(bctx, "go", "install", kmsEmulatorModule+"@"+kmsEmulatorVer)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("local-kms: go install %s@%s: %v\n%s", kmsEmulatorModule, kmsEmulatorVer, err, out)
	}
	return bin
}

var kmsStartedRE = regexp.MustCompile(`Local KMS started on [0-9.]+:(\d+)`)

// kmsStartEmulator starts local-kms on a port it picks itself (PORT=0,
// read back from its log, so no port race) and returns a client for it.
func kmsStartEmulator(ctx context.Context, t *testing.T) *kmsEmulator {
	t.Helper()
	bin := kmsEmulatorBinary(ctx, t)
	e := &kmsEmulator{done: make(chan struct{}), log: &kmsLog{}}
	e.cmd = exec.Command(bin)
	e.cmd.Env = append(os.Environ(),
		"PORT=0", "KMS_REGION="+kmsRegion, "KMS_ACCOUNT_ID="+kmsAccount,
		"KMS_DATA_PATH="+t.TempDir(), "KMS_SEED_PATH="+filepath.Join(t.TempDir(), "no-seed.yaml"))
	pr, pw := io.Pipe()
	e.cmd.Stdout, e.cmd.Stderr = pw, pw
	if err := e.cmd.Start(); err != nil {
		t.Fatalf("local-kms: start: %v", err)
	}
	go func() {
		e.cmd.Wait()
		pw.Close()
		close(e.done)
	}()
	t.Cleanup(func() { e.stop(t) })

	port := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			fmt.Fprintln(e.log, sc.Text())
			if m := kmsStartedRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case port <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case p := <-port:
		e.endpoint = "http://127.0.0.1:" + p
	case <-e.done:
		t.Fatalf("local-kms exited at startup:\n%s", e.log)
	case <-time.After(30 * time.Second):
		t.Fatalf("local-kms did not start within 30 s:\n%s", e.log)
	}
	e.client = kms.New(kms.Options{
		Region:       kmsRegion,
		BaseEndpoint: aws.String(e.endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDLOCALKMS", "local-kms-secret", ""),
	})
	return e
}

// createKey makes a symmetric key with an alias and returns its ARN.
func (e *kmsEmulator) createKey(ctx context.Context, t *testing.T, alias string) string {
	t.Helper()
	out, err := e.client.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("phiproxy test " + alias)})
	if err != nil {
		t.Fatalf("local-kms CreateKey: %v\n%s", err, e.log)
	}
	if _, err := e.client.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(alias), TargetKeyId: out.KeyMetadata.KeyId}); err != nil {
		t.Fatalf("local-kms CreateAlias: %v", err)
	}
	return aws.ToString(out.KeyMetadata.Arn)
}

// stop kills the emulator and waits for it; it is idempotent.
func (e *kmsEmulator) stop(t *testing.T) {
	select {
	case <-e.done:
		return
	default:
	}
	if err := e.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("local-kms: kill: %v", err)
	}
	select {
	case <-e.done:
	case <-time.After(10 * time.Second):
		t.Errorf("local-kms did not exit")
	}
}
