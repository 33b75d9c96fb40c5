package main

// Temporary stubs: each subcommand's owner replaces its stub with a file of
// its own (serve.go, check.go, demo.go, keys.go) and deletes it here.

import (
	"context"
	"errors"
	"io"
)

var errNotYet = errors.New("not implemented yet")

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error { return errNotYet }
