// Command phiproxy is a PostgreSQL wire-protocol proxy that keeps protected
// health information encrypted inside PostgreSQL.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// errUsage marks a command-line mistake: exit code 2.
var errUsage = errors.New("usage")

const usage = `phiproxy: keep PHI encrypted inside PostgreSQL

Usage:
  phiproxy serve   --config FILE       run the proxy
  phiproxy check   --config FILE       check a configuration, its keys, certificates and databases
  phiproxy schema  --config FILE       print the DDL that makes the database ready for the policy
  phiproxy migrate MODE --config FILE --table T
                                       encrypt | decrypt | reencrypt | reindex a table in place, online
  phiproxy keys    SUBCOMMAND ...      init | rotate | rotate-index | list | usage | rewrap | retire
  phiproxy audit   verify FILE...      check the hash chain of audit log files
  phiproxy demo                        throwaway PostgreSQL + proxy for a first look
  phiproxy version                     print the version and commit

Run phiproxy COMMAND --help for a command's flags. Exit status: 0 success,
1 failure or problems found, 2 usage mistake, 130/143 interrupted.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a subcommand and maps its outcome to an exit code:
// 0 success, 1 failure, 2 usage, 130/143 interrupted by SIGINT/SIGTERM.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var err error
	if len(args) > 1 && args[0] == "help" {
		args = []string{args[1], "--help"}
	}
	switch args[0] {
	case "serve":
		err = runServe(ctx, args[1:], stdout, stderr)
	case "check":
		err = runCheck(ctx, args[1:], stdout, stderr)
	case "schema":
		err = runSchema(ctx, args[1:], stdout, stderr)
	case "migrate":
		err = runMigrate(ctx, args[1:], stdout, stderr)
	case "demo":
		err = runDemo(ctx, args[1:], stdout, stderr)
	case "keys":
		err = runKeys(ctx, args[1:], stdout, stderr)
	case "audit":
		err = runAudit(ctx, args[1:], stdout, stderr)
	case "version":
		err = runVersion(args[1:], stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "phiproxy: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	var (
		help   *helpError
		logged *loggedError
	)
	switch {
	case err == nil:
		return 0
	case errors.As(err, &help):
		fmt.Fprint(stdout, help.text)
		return 0
	case errors.As(err, &logged) && ctx.Err() != nil:
		return interruptedCode(ctx)
	case errors.As(err, &logged):
		return 1
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "phiproxy:", err)
		return 2
	case ctx.Err() != nil:
		fmt.Fprintln(stderr, "phiproxy:", err)
		return interruptedCode(ctx)
	default:
		fmt.Fprintln(stderr, "phiproxy:", err)
		return 1
	}
}
