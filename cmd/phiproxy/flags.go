package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// helpError is returned when a command was asked for its help: run prints
// the text to stdout and exits 0.
type helpError struct{ text string }

func (e *helpError) Error() string { return "help requested" }

// newFlagSet returns a silent flag set: parseArgs reports its errors and
// help.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseArgs parses args with fs, accepting flags before, between and after
// positional arguments ("keys retire 2 --config x.yaml" as well as "keys
// retire --config x.yaml 2"; "--" ends the flags), and returns the
// positional arguments. -h and --help return a *helpError carrying usage;
// other mistakes an errUsage naming the command.
func parseArgs(fs *flag.FlagSet, args []string, usage string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, &helpError{text: usage}
			}
			return nil, fmt.Errorf("%w: %s: %v (see phiproxy %s --help)", errUsage, fs.Name(), err, fs.Name())
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// wantHelp reports whether args ask for help: "-h", "--help" or "help".
func wantHelp(args []string) bool {
	return len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help" || args[0] == "help")
}

// noArgs refuses positional arguments.
func noArgs(cmd string, pos []string) error {
	if len(pos) > 0 {
		return fmt.Errorf("%w: %s: unexpected argument %q (see phiproxy %s --help)", errUsage, cmd, pos[0], cmd)
	}
	return nil
}

// needConfig refuses an empty --config.
func needConfig(cmd, path string) error {
	if path == "" {
		return fmt.Errorf("%w: %s needs --config FILE (or $%s)", errUsage, cmd, envConfig)
	}
	return nil
}
