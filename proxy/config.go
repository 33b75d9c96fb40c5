package proxy

import "time"

// This file is the contract between cmd and proxy: the `listen`, `upstream`,
// `metrics` and `limits` sections of the YAML configuration (see
// config.example.yaml). cmd decodes them with yaml.v3 (KnownFields) and
// passes them to New.

// ListenConfig is the client-facing side.
type ListenConfig struct {
	Address string          `yaml:"address"`
	TLS     ListenTLSConfig `yaml:"tls"`
}

// ListenTLSConfig configures TLS termination for clients.
type ListenTLSConfig struct {
	CertFile       string `yaml:"cert_file"`
	KeyFile        string `yaml:"key_file"`
	MinVersion     string `yaml:"min_version"`     // "1.3" (default) or "1.2"
	ClientCAFile   string `yaml:"client_ca_file"`  // set to require client certificates
	AllowPlaintext bool   `yaml:"allow_plaintext"` // true only for local development
}

// UpstreamConfig is the PostgreSQL side.
type UpstreamConfig struct {
	Address        string            `yaml:"address"`
	TLS            UpstreamTLSConfig `yaml:"tls"`
	ConnectTimeout time.Duration     `yaml:"connect_timeout"`
}

// UpstreamTLSConfig configures the proxy's TLS client to PostgreSQL.
type UpstreamTLSConfig struct {
	Mode       string `yaml:"mode"` // disable | require | verify-ca | verify-full (default)
	CAFile     string `yaml:"ca_file"`
	ServerName string `yaml:"server_name"`
}

// MetricsConfig is the /metrics, /healthz, /readyz listener.
type MetricsConfig struct {
	Address string `yaml:"address"`
}
