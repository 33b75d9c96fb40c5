package auditlog

import (
	"errors"
	"fmt"
	"time"
)

// Config is the `audit:` section of the configuration.
type Config struct {
	// File is where records go: a path (created 0600 if missing, appended
	// to), or stdout or stderr. Empty: no audit log.
	File string `yaml:"file"`
	// OnFailure is what happens while records cannot be written (the sink
	// fails, or the queue stays full past MaxWait): refuse (default)
	// refuses statements on PHI tables until the log recovers; continue
	// lets them run, counting and logging the loss.
	OnFailure string `yaml:"on_failure"`
	// QueueSize bounds the records waiting for the writer (default 8192).
	QueueSize int `yaml:"queue_size"`
	// MaxWait bounds how long a session waits for room in a full queue
	// before the record is lost (default 20ms).
	MaxWait time.Duration `yaml:"max_wait"`
	// FlushInterval is how often the writer writes what is queued (default
	// 10ms; sooner when the queue is half full).
	FlushInterval time.Duration `yaml:"flush_interval"`
}

// OnFailure values.
const (
	OnFailureRefuse   = "refuse"
	OnFailureContinue = "continue"
)

// Special File values.
const (
	FileStdout = "stdout"
	FileStderr = "stderr"
)

// Enabled reports whether the configuration asks for an audit log.
func (c Config) Enabled() bool { return c.File != "" }

// SetDefaults fills the zero fields.
func (c *Config) SetDefaults() {
	if c.OnFailure == "" {
		c.OnFailure = OnFailureRefuse
	}
	if c.QueueSize == 0 {
		c.QueueSize = 8192
	}
	if c.MaxWait == 0 {
		c.MaxWait = 20 * time.Millisecond
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = 10 * time.Millisecond
	}
}

// Validate checks a configuration whose defaults are set. Each error names
// its field (audit.<field>).
func (c Config) Validate() error {
	var errs []error
	if c.OnFailure != OnFailureRefuse && c.OnFailure != OnFailureContinue {
		errs = append(errs, fmt.Errorf("audit.on_failure %q: want %s or %s", c.OnFailure, OnFailureRefuse, OnFailureContinue))
	}
	if c.QueueSize < 1 || c.QueueSize > 1<<20 {
		errs = append(errs, fmt.Errorf("audit.queue_size %d: want 1 to %d", c.QueueSize, 1<<20))
	}
	if c.MaxWait < 0 || c.MaxWait > 10*time.Second {
		errs = append(errs, fmt.Errorf("audit.max_wait %v: want 0 to 10s (it delays sessions while the queue is full)", c.MaxWait))
	}
	if c.FlushInterval < time.Millisecond || c.FlushInterval > 10*time.Second {
		errs = append(errs, fmt.Errorf("audit.flush_interval %v: want 1ms to 10s", c.FlushInterval))
	}
	return errors.Join(errs...)
}
