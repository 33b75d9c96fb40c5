// Package awskms is the AWS KMS key provider of phiproxy's keyring: data
// keys and the blind-index root key are generated with GenerateDataKey
// (AES_256), re-wrapped with Encrypt and unwrapped with Decrypt, always with
// an encryption context naming the keyring, the purpose and the key id (see
// crypto.EncryptionContext), so KMS audit logs say what each call was for
// and a wrapped key moved elsewhere does not decrypt.
//
// The AWS SDK lives only in this package. The provider depends on KMSAPI,
// the three calls it makes (as tink-go-awskms does), so tests can use a
// fake. Every call takes the caller's context plus a per-attempt timeout and
// is retried with exponential backoff and jitter when the failure is
// transient (throttling, KMS internal errors, network errors, timeouts).
// KMS is called only when the keyring is created, opened, rotated or
// rewrapped: never per value, so an outage after startup stops no traffic,
// and an outage at startup fails startup with the last error.
package awskms

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/novamind/phiproxy/crypto"
)

// KMSAPI is the subset of *kms.Client the provider uses.
type KMSAPI interface {
	GenerateDataKey(ctx context.Context, in *kms.GenerateDataKeyInput, optFns ...func(*kms.Options)) (*kms.GenerateDataKeyOutput, error)
	Encrypt(ctx context.Context, in *kms.EncryptInput, optFns ...func(*kms.Options)) (*kms.EncryptOutput, error)
	Decrypt(ctx context.Context, in *kms.DecryptInput, optFns ...func(*kms.Options)) (*kms.DecryptOutput, error)
}

var _ KMSAPI = (*kms.Client)(nil)

// Defaults of Options.
const (
	DefaultTimeout    = 5 * time.Second
	DefaultAttempts   = 4
	DefaultBackoff    = 100 * time.Millisecond
	DefaultMaxBackoff = 2 * time.Second
)

// Options tune a Provider. Zero values take the defaults.
type Options struct {
	Timeout    time.Duration // per attempt
	Attempts   int           // total attempts per operation, at least 1
	Backoff    time.Duration // first retry delay; doubles per attempt, with jitter
	MaxBackoff time.Duration
	// Sleep waits between attempts; tests replace it. It returns early with
	// ctx's error.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Provider implements crypto.Provider with AWS KMS. Safe for concurrent use.
type Provider struct {
	api   KMSAPI
	keyID string // the KMS key that wraps new keys (id, ARN or alias); may be empty for unwrap-only use
	opts  Options
}

var (
	_ crypto.Provider = (*Provider)(nil)
	_ slog.LogValuer  = (*Provider)(nil)
)

// New returns a provider that wraps under keyID using api.
func New(api KMSAPI, keyID string, opts Options) *Provider {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Attempts <= 0 {
		opts.Attempts = DefaultAttempts
	}
	if opts.Backoff <= 0 {
		opts.Backoff = DefaultBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	if opts.Sleep == nil {
		opts.Sleep = sleep
	}
	return &Provider{api: api, keyID: keyID, opts: opts}
}

// NewFromConfig builds a KMS client from the standard AWS configuration
// chain (environment, shared files, instance roles), with cfg.Region and
// cfg.Endpoint (an emulator's address) when set, and returns a provider
// wrapping under cfg.KeyID. The SDK's own retries are turned off: the
// provider retries, so that attempts and timeouts are counted in one place.
func NewFromConfig(ctx context.Context, cfg crypto.AWSKMSConfig) (*Provider, error) {
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("aws-kms: load AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		return nil, errors.New("aws-kms: no region: set keys.aws_kms.region or AWS_REGION")
	}
	client := kms.NewFromConfig(awsCfg, func(o *kms.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	})
	return New(client, cfg.KeyID, Options{Timeout: cfg.Timeout}), nil
}

// Name returns crypto.ProviderAWSKMS.
func (p *Provider) Name() string { return crypto.ProviderAWSKMS }

// KeyID returns the configured KMS key.
func (p *Provider) KeyID() string { return p.keyID }

func (p *Provider) String() string { return "awskms.Provider{key: " + p.keyID + "}" }

// LogValue implements slog.LogValuer.
func (p *Provider) LogValue() slog.Value {
	return slog.GroupValue(slog.String("provider", crypto.ProviderAWSKMS), slog.String("kms_key", p.keyID))
}

// GenerateKey asks KMS for a new AES-256 data key.
func (p *Provider) GenerateKey(ctx context.Context, ec map[string]string) ([]byte, crypto.WrappedKey, error) {
	if p.keyID == "" {
		return nil, crypto.WrappedKey{}, errors.New("aws-kms generate data key: no KMS key configured (keys.aws_kms.key_id)")
	}
	var out *kms.GenerateDataKeyOutput
	err := p.retry(ctx, "generate data key", p.keyID, func(ctx context.Context) (err error) {
		out, err = p.api.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{
			KeyId:             aws.String(p.keyID),
			KeySpec:           types.DataKeySpecAes256,
			EncryptionContext: ec,
		})
		return err
	})
	if err != nil {
		return nil, crypto.WrappedKey{}, err
	}
	if len(out.Plaintext) != crypto.KeySize || len(out.CiphertextBlob) == 0 {
		clear(out.Plaintext)
		return nil, crypto.WrappedKey{}, fmt.Errorf("aws-kms generate data key (key %s): unexpected response sizes", p.keyID)
	}
	return out.Plaintext, crypto.WrappedKey{
		Provider:    crypto.ProviderAWSKMS,
		MasterKeyID: keyARN(out.KeyId, p.keyID),
		Ciphertext:  out.CiphertextBlob,
	}, nil
}

// Wrap encrypts an existing key under the configured KMS key.
func (p *Provider) Wrap(ctx context.Context, key []byte, ec map[string]string) (crypto.WrappedKey, error) {
	if p.keyID == "" {
		return crypto.WrappedKey{}, errors.New("aws-kms encrypt: no KMS key configured (keys.aws_kms.key_id)")
	}
	var out *kms.EncryptOutput
	err := p.retry(ctx, "encrypt", p.keyID, func(ctx context.Context) (err error) {
		out, err = p.api.Encrypt(ctx, &kms.EncryptInput{
			KeyId:             aws.String(p.keyID),
			Plaintext:         key,
			EncryptionContext: ec,
		})
		return err
	})
	if err != nil {
		return crypto.WrappedKey{}, err
	}
	if len(out.CiphertextBlob) == 0 {
		return crypto.WrappedKey{}, fmt.Errorf("aws-kms encrypt (key %s): empty ciphertext", p.keyID)
	}
	return crypto.WrappedKey{Provider: crypto.ProviderAWSKMS, MasterKeyID: keyARN(out.KeyId, p.keyID), Ciphertext: out.CiphertextBlob}, nil
}

// Unwrap decrypts w with the KMS key recorded in it (not the configured
// one: rotating the configured key must not orphan older wrapped keys).
// KMS refusing the ciphertext or context yields crypto.ErrUnwrap.
func (p *Provider) Unwrap(ctx context.Context, w crypto.WrappedKey, ec map[string]string) ([]byte, error) {
	if w.Provider != crypto.ProviderAWSKMS {
		return nil, fmt.Errorf("aws-kms decrypt: key wrapped by provider %q: %w", w.Provider, crypto.ErrUnwrap)
	}
	var out *kms.DecryptOutput
	err := p.retry(ctx, "decrypt", w.MasterKeyID, func(ctx context.Context) (err error) {
		out, err = p.api.Decrypt(ctx, &kms.DecryptInput{
			KeyId:             aws.String(w.MasterKeyID),
			CiphertextBlob:    w.Ciphertext,
			EncryptionContext: ec,
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(out.Plaintext) != crypto.KeySize {
		clear(out.Plaintext)
		return nil, fmt.Errorf("aws-kms decrypt (key %s): plaintext is not a %d-byte key: %w", w.MasterKeyID, crypto.KeySize, crypto.ErrUnwrap)
	}
	return out.Plaintext, nil
}

func keyARN(got *string, configured string) string {
	if got != nil && *got != "" {
		return *got
	}
	return configured
}

// retry runs call with a per-attempt timeout until it succeeds, fails
// permanently, runs out of attempts or ctx ends.
func (p *Provider) retry(ctx context.Context, op, keyID string, call func(context.Context) error) error {
	var err error
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
		err = call(actx)
		cancel()
		if err == nil {
			return nil
		}
		if isUnwrapFailure(err) {
			return fmt.Errorf("aws-kms %s (key %s): %w: %w", op, keyID, crypto.ErrUnwrap, err)
		}
		if ctx.Err() != nil || !retryable(err) || attempt >= p.opts.Attempts {
			return fmt.Errorf("aws-kms %s (key %s): attempt %d of %d: %w", op, keyID, attempt, p.opts.Attempts, err)
		}
		if serr := p.opts.Sleep(ctx, p.backoff(attempt)); serr != nil {
			return fmt.Errorf("aws-kms %s (key %s): attempt %d of %d: %w (then %w)", op, keyID, attempt, p.opts.Attempts, err, serr)
		}
	}
}

// backoff returns the delay after the given failed attempt: exponential,
// capped, with jitter in [d/2, d) so that many proxies starting at once do
// not retry in step.
func (p *Provider) backoff(attempt int) time.Duration {
	d := p.opts.Backoff << (attempt - 1)
	if d <= 0 || d > p.opts.MaxBackoff {
		d = p.opts.MaxBackoff
	}
	return d/2 + rand.N(d/2+1)
}

// isUnwrapFailure reports KMS errors that mean the wrapped key, its context
// or its KMS key is wrong: retrying cannot help.
func isUnwrapFailure(err error) bool {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.ErrorCode() {
	case "InvalidCiphertextException", "IncorrectKeyException":
		return true
	}
	return false
}

// retryable reports transient failures: throttling and KMS-side errors,
// 5xx responses, and transport errors and per-attempt timeouts. Client
// errors (access denied, key not found or disabled, validation) are not.
func retryable(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "ThrottlingException", "LimitExceededException", "KMSInternalException",
			"DependencyTimeoutException", "KeyUnavailableException", "RequestLimitExceeded",
			"ServiceUnavailable", "InternalFailure", "RequestTimeout":
			return true
		}
		if ae.ErrorFault() == smithy.FaultServer {
			return true
		}
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		// StatusCode 0: the request was never answered (connection
		// refused or reset, timeout).
		code := re.HTTPStatusCode()
		return code == 0 || code >= http.StatusInternalServerError || code == http.StatusTooManyRequests
	}
	if ae != nil {
		return false
	}
	return true // no response: network error or timeout
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
