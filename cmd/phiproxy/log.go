package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// logConfig is the `log:` section.
type logConfig struct {
	Format string `yaml:"format"` // json (default) | text
	Level  string `yaml:"level"`  // debug | info (default) | warn | error
}

func (c *logConfig) setDefaults() {
	if c.Format == "" {
		c.Format = "json"
	}
	if c.Level == "" {
		c.Level = "info"
	}
}

func (c logConfig) validate() error {
	if c.Format != "json" && c.Format != "text" {
		return fmt.Errorf("log.format %q: want json or text", c.Format)
	}
	if _, err := parseLevel(c.Level); err != nil {
		return err
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return 0, fmt.Errorf("log.level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// newLogger builds the process's one logger; everything below receives it.
func newLogger(c logConfig, w io.Writer) (*slog.Logger, error) {
	c.setDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	level, _ := parseLevel(c.Level)
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return slog.New(slog.NewJSONHandler(w, opts)), nil
}
