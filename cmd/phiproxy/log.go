package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
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

// loggedError is an error that serve has already logged (a fatal startup
// error, or why it stopped) as one line in the configured log format:
// run maps it to an exit code and prints nothing more, so that stderr
// stays one format a log shipper can parse.
type loggedError struct{ err error }

func (e *loggedError) Error() string { return e.err.Error() }
func (e *loggedError) Unwrap() error { return e.err }

// logFatal logs err as serve's fatal error and returns it as logged.
func logFatal(logger *slog.Logger, err error) error {
	logger.Error("phiproxy cannot start", "error", err.Error())
	return &loggedError{err}
}

// startupLogger is the logger of a serve whose configuration did not
// load: the format the file's log section asks for, read leniently (the
// rest of the file may be what is wrong), and json, the default, when the
// file cannot say.
func startupLogger(path string, w io.Writer) *slog.Logger {
	var doc struct {
		Log logConfig `yaml:"log"`
	}
	c := logConfig{Format: "json"}
	if data, err := os.ReadFile(path); err == nil && yaml.Unmarshal(data, &doc) == nil && doc.Log.Format == "text" {
		c.Format = "text"
	}
	logger, _, _ := newLogger(c, w)
	return logger
}
