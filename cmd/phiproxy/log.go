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
// Its level is a LevelVar, so a reload can change it.
func newLogger(c logConfig, w io.Writer) (*slog.Logger, *slog.LevelVar, error) {
	c.setDefaults()
	if err := c.validate(); err != nil {
		return nil, nil, err
	}
	level, _ := parseLevel(c.Level)
	lv := new(slog.LevelVar)
	lv.Set(level)
	opts := &slog.HandlerOptions{Level: lv}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts)), lv, nil
	}
	return slog.New(slog.NewJSONHandler(w, opts)), lv, nil
}
