package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/novamind/phiproxy/internal/auditlog"
)

const auditUsage = `Usage:
  phiproxy audit verify FILE...   check the hash chain of audit log files

Give the files of a rotated log oldest first (audit.log.2 audit.log.1
audit.log): each must continue the one before. Exit status 0 when every
chain is intact, 1 at the first broken line (printed as FILE:LINE: why).
`

// runAudit runs `phiproxy audit SUBCOMMAND`.
func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, auditUsage)
		return fmt.Errorf("%w: phiproxy audit verify FILE [FILE]", errUsage)
	}
	switch args[0] {
	case "verify":
		return runAuditVerify(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, auditUsage)
		return nil
	}
	fmt.Fprint(stderr, auditUsage)
	return fmt.Errorf("%w: unknown audit command %q", errUsage, args[0])
}

func runAuditVerify(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, auditUsage) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return fmt.Errorf("%w: phiproxy audit verify FILE [FILE]", errUsage)
	}
	sums, err := auditlog.VerifyFiles(fs.Args()...)
	for _, s := range sums {
		from := "the beginning of the log"
		if s.Continues != "" {
			from = fmt.Sprintf("an earlier file (hash %.16s…)", s.Continues)
			if s.Name != sums[0].Name {
				from = "the file before it"
			}
		}
		fmt.Fprintf(stdout, "%s: chain intact: %d records in %d segments, continuing %s; head seq %d hash %s\n",
			s.Name, s.Records, s.Segments, from, s.Head.Seq, s.Head.Hash)
	}
	if err != nil {
		var ce *auditlog.ChainError
		if errors.As(err, &ce) {
			return fmt.Errorf("audit chain broken: %w", err)
		}
		return fmt.Errorf("audit verify: %w", err)
	}
	if len(sums) > 0 {
		fmt.Fprintln(stdout, "compare the last head with the proxy's last \"audit log closed\" or \"audit log reopened\" line: lines cut from the end leave no trace in the file itself")
	}
	return nil
}
