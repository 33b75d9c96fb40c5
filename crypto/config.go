package crypto

import "time"

// Config is the `keys:` section of the configuration.
type Config struct {
	KeyringFile string       `yaml:"keyring_file"`
	Provider    string       `yaml:"provider"` // local (default) | aws-kms
	Local       LocalConfig  `yaml:"local"`
	AWSKMS      AWSKMSConfig `yaml:"aws_kms"`
}

// LocalConfig configures the development master key.
type LocalConfig struct {
	// MasterKeyFile holds a base64 32-byte key; PHIPROXY_MASTER_KEY
	// overrides it.
	MasterKeyFile string `yaml:"master_key_file"`
}

// AWSKMSConfig configures the AWS KMS provider. Credentials come from the
// standard AWS chain.
type AWSKMSConfig struct {
	KeyID    string        `yaml:"key_id"`
	Region   string        `yaml:"region"`
	Endpoint string        `yaml:"endpoint"` // an emulator's address in tests
	Timeout  time.Duration `yaml:"timeout"`
}
