package awskms

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/novamind/phiproxy/crypto"
)

const testARN = "arn:aws:kms:us-east-1:111122223333:key/test"

// fakeKMS "wraps" by XOR with a byte and checks the encryption context. Its
// next errors fail calls in order before it answers.
type fakeKMS struct {
	mu       sync.Mutex
	errs     []error
	calls    int
	contexts []map[string]string
	hang     bool // block until the per-attempt deadline
}

func (f *fakeKMS) step(ctx context.Context, ec map[string]string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.contexts = append(f.contexts, ec)
	if _, ok := ctx.Deadline(); !ok {
		return errors.New("call without a deadline")
	}
	if f.hang {
		f.mu.Unlock()
		<-ctx.Done()
		f.mu.Lock()
		return ctx.Err()
	}
	if len(f.errs) > 0 {
		err := f.errs[0]
		f.errs = f.errs[1:]
		return err
	}
	return nil
}

func xor(b []byte, m map[string]string) []byte {
	return xorBytes(append([]byte(ec(m)), b...))
}

func xorBytes(b []byte) []byte {
	out := bytes.Clone(b)
	for i := range out {
		out[i] ^= 0x5a
	}
	return out
}

func (f *fakeKMS) GenerateDataKey(ctx context.Context, in *kms.GenerateDataKeyInput, _ ...func(*kms.Options)) (*kms.GenerateDataKeyOutput, error) {
	if err := f.step(ctx, in.EncryptionContext); err != nil {
		return nil, err
	}
	if in.KeySpec != types.DataKeySpecAes256 {
		return nil, errors.New("wrong key spec")
	}
	key := bytes.Repeat([]byte{7}, 32)
	return &kms.GenerateDataKeyOutput{Plaintext: key, CiphertextBlob: xor(key, in.EncryptionContext), KeyId: aws.String(testARN)}, nil
}

func (f *fakeKMS) Encrypt(ctx context.Context, in *kms.EncryptInput, _ ...func(*kms.Options)) (*kms.EncryptOutput, error) {
	if err := f.step(ctx, in.EncryptionContext); err != nil {
		return nil, err
	}
	return &kms.EncryptOutput{CiphertextBlob: xor(in.Plaintext, in.EncryptionContext), KeyId: aws.String(testARN)}, nil
}

func (f *fakeKMS) Decrypt(ctx context.Context, in *kms.DecryptInput, _ ...func(*kms.Options)) (*kms.DecryptOutput, error) {
	if err := f.step(ctx, in.EncryptionContext); err != nil {
		return nil, err
	}
	plain := xorBytes(in.CiphertextBlob)
	prefix := ec(in.EncryptionContext)
	if !bytes.HasPrefix(plain, []byte(prefix)) {
		return nil, &types.InvalidCiphertextException{Message: aws.String("context mismatch")}
	}
	return &kms.DecryptOutput{Plaintext: plain[len(prefix):], KeyId: in.KeyId}, nil
}

func ec(m map[string]string) string {
	return m[crypto.ContextKeyring] + "|" + m[crypto.ContextPurpose] + "|" + m[crypto.ContextKeyID] + "|"
}

// recordSleep replaces real sleeping and records the delays.
type recordSleep struct{ delays []time.Duration }

func (r *recordSleep) sleep(ctx context.Context, d time.Duration) error {
	r.delays = append(r.delays, d)
	return ctx.Err()
}

func newTest(f *fakeKMS, attempts int) (*Provider, *recordSleep) {
	r := &recordSleep{}
	return New(f, "alias/phiproxy", Options{Attempts: attempts, Timeout: 50 * time.Millisecond, Sleep: r.sleep}), r
}

// kmsResponseError is what the SDK returns for an HTTP-level failure
// (status 0: no response at all).
func kmsResponseError(status int, err error) error {
	return &smithy.OperationError{ServiceID: "KMS", OperationName: "Decrypt", Err: &awshttp.ResponseError{
		ResponseError: &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}}, Err: err},
	}}
}

func throttled() error {
	return &smithy.GenericAPIError{Code: "ThrottlingException", Message: "slow down", Fault: smithy.FaultClient}
}

func TestRoundTripAndContext(t *testing.T) {
	ctx := context.Background()
	p, _ := newTest(&fakeKMS{}, 3)
	ec := crypto.EncryptionContext("ring", 3)
	key, w, err := p.GenerateKey(ctx, ec)
	if err != nil {
		t.Fatal(err)
	}
	if w.Provider != crypto.ProviderAWSKMS || w.MasterKeyID != testARN {
		t.Fatalf("wrapped key metadata: %+v", w)
	}
	got, err := p.Unwrap(ctx, w, ec)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("unwrap: %v", err)
	}
	_, err = p.Unwrap(ctx, w, crypto.EncryptionContext("ring", 4))
	if !errors.Is(err, crypto.ErrUnwrap) {
		t.Fatalf("unwrap with another context: %v", err)
	}
	w2, err := p.Wrap(ctx, key, ec)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := p.Unwrap(ctx, w2, ec); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("unwrap after wrap: %v", err)
	}
	if _, err := p.Unwrap(ctx, crypto.WrappedKey{Provider: crypto.ProviderLocal}, ec); !errors.Is(err, crypto.ErrUnwrap) {
		t.Fatalf("local key: %v", err)
	}
}

func TestRetries(t *testing.T) {
	ctx := context.Background()
	ec := crypto.EncryptionContext("ring", 1)
	netErr := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	for _, tc := range []struct {
		name      string
		errs      []error
		hang      bool
		wantErr   bool
		wantCalls int
		unwrapErr bool
	}{
		{name: "success", wantCalls: 1},
		{name: "throttled then ok", errs: []error{throttled(), throttled()}, wantCalls: 3},
		{name: "network then ok", errs: []error{netErr}, wantCalls: 2},
		{name: "server fault then ok", errs: []error{&types.KMSInternalException{Message: aws.String("x")}}, wantCalls: 2},
		{name: "no response then ok", errs: []error{kmsResponseError(0, netErr)}, wantCalls: 2},
		{name: "503 then ok", errs: []error{kmsResponseError(503, errors.New("unavailable"))}, wantCalls: 2},
		{name: "400 not retried", errs: []error{kmsResponseError(400, errors.New("bad request"))}, wantErr: true, wantCalls: 1},
		{name: "always down", errs: []error{netErr, netErr, netErr, netErr, netErr}, wantErr: true, wantCalls: 4},
		{name: "timeout each attempt", hang: true, wantErr: true, wantCalls: 4},
		{name: "access denied not retried", errs: []error{&smithy.GenericAPIError{Code: "AccessDeniedException", Fault: smithy.FaultClient}}, wantErr: true, wantCalls: 1},
		{name: "disabled key not retried", errs: []error{&types.DisabledException{Message: aws.String("x")}}, wantErr: true, wantCalls: 1},
		{name: "invalid ciphertext is an unwrap failure", errs: []error{&types.InvalidCiphertextException{Message: aws.String("x")}}, wantErr: true, wantCalls: 1, unwrapErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeKMS{errs: tc.errs, hang: tc.hang}
			p, slept := newTest(f, 4)
			start := time.Now()
			_, _, err := p.GenerateKey(ctx, ec)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if f.calls != tc.wantCalls {
				t.Fatalf("%d calls, want %d", f.calls, tc.wantCalls)
			}
			if errors.Is(err, crypto.ErrUnwrap) != tc.unwrapErr {
				t.Fatalf("ErrUnwrap = %v, want %v (%v)", !tc.unwrapErr, tc.unwrapErr, err)
			}
			if len(slept.delays) != max(0, tc.wantCalls-1) {
				t.Fatalf("slept %d times, want %d", len(slept.delays), tc.wantCalls-1)
			}
			for i, d := range slept.delays {
				base := DefaultBackoff << i
				if d < base/2 || d > base {
					t.Fatalf("delay %d = %v, want in [%v, %v]", i, d, base/2, base)
				}
			}
			if tc.wantErr && !tc.unwrapErr && !strings.Contains(err.Error(), fmt.Sprintf("attempt %d of 4", tc.wantCalls)) {
				t.Fatalf("error does not count attempts: %v", err)
			}
			if tc.hang && time.Since(start) > 2*time.Second {
				t.Fatal("per-attempt timeout not applied")
			}
		})
	}
}

func TestCanceledContextStopsRetrying(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	f := &fakeKMS{errs: []error{throttled(), throttled(), throttled()}}
	p := New(f, "k", Options{Attempts: 10, Sleep: func(ctx context.Context, d time.Duration) error {
		cancel()
		return ctx.Err()
	}})
	_, err := p.Wrap(ctx, make([]byte, 32), nil)
	if !errors.Is(err, context.Canceled) || f.calls != 1 {
		t.Fatalf("err %v after %d calls", err, f.calls)
	}
}

func TestNoKeyConfigured(t *testing.T) {
	p := New(&fakeKMS{}, "", Options{})
	if _, _, err := p.GenerateKey(context.Background(), nil); err == nil || !strings.Contains(err.Error(), "key_id") {
		t.Fatalf("GenerateKey without a key: %v", err)
	}
}

func TestKeyringWithFakeKMS(t *testing.T) {
	ctx := context.Background()
	f := &fakeKMS{}
	p, _ := newTest(f, 2)
	path := t.TempDir() + "/keyring.json"
	kr, err := crypto.CreateKeyring(ctx, path, p)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := kr.Cipher("s.t.c")
	env, _ := c.SealText(nil, []byte("x"))
	f.errs = []error{throttled()}
	kr2, err := crypto.OpenKeyring(ctx, path, p)
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := kr2.Cipher("s.t.c")
	if got, err := c2.Open(nil, env); err != nil || string(got) != "x" {
		t.Fatalf("open: %v", err)
	}
	for _, m := range f.contexts {
		if m[crypto.ContextKeyring] != kr.ID() || m[crypto.ContextPurpose] == "" {
			t.Fatalf("encryption context %v", m)
		}
	}
}
