package policy

import (
	"fmt"
	"strings"
)

// SessionSettings are the settings under which PostgreSQL's text output of
// each logical type is what phiproxy canonicalizes without ambiguity: ISO
// dates, UTC, round-tripping floats, hex bytea. The USING casts of a
// Script and `phiproxy migrate` run under them.
var SessionSettings = [][2]string{
	{"DateStyle", "ISO, YMD"},
	{"TimeZone", "UTC"},
	{"IntervalStyle", "postgres"},
	{"extra_float_digits", "3"},
	{"bytea_output", "hex"},
}

// Script renders problems as one SQL script for psql, step by step and
// table by table, each problem's message as a comment before the DDL. The
// ALTER TABLE statements of one table and step are merged into one (one
// table rewrite for all the type changes, one brief lock for all the NOT
// VALID constraints); index drops come before them and other statements
// (CREATE INDEX, CREATE TABLE) after; VALIDATE CONSTRAINT comes last, in a
// statement of its own, so that the scan does not hold the lock the other
// changes take. Problems without DDL are listed as comments.
func Script(problems []Problem) string {
	var b strings.Builder
	for _, step := range []Step{StepPrepare, StepProtect} {
		var tables []string
		byTable := map[string][]Problem{}
		for _, p := range problems {
			if p.Step != step {
				continue
			}
			if _, ok := byTable[p.Table]; !ok {
				tables = append(tables, p.Table)
			}
			byTable[p.Table] = append(byTable[p.Table], p)
		}
		if len(tables) == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("\n")
		}
		writeStepHeader(&b, step, tables, byTable)
		for _, t := range tables {
			writeTable(&b, byTable[t])
		}
	}
	return b.String()
}

func writeStepHeader(b *strings.Builder, step Step, tables []string, byTable map[string][]Problem) {
	switch step {
	case StepPrepare:
		b.WriteString("-- Step 1: before phiproxy serves these tables and before `phiproxy migrate encrypt`.\n")
		b.WriteString("-- CREATE/DROP INDEX CONCURRENTLY cannot run inside a transaction block (no psql -1).\n")
		casts := false
		for _, t := range tables {
			for _, p := range byTable[t] {
				for _, s := range p.DDL {
					casts = casts || strings.Contains(s, " USING ")
				}
			}
		}
		if casts {
			b.WriteString("-- The casts below read these settings: run the step in one session.\n")
			for _, s := range SessionSettings {
				fmt.Fprintf(b, "SET %s = %s;\n", s[0], QuoteLiteral(s[1]))
			}
		}
	case StepProtect:
		b.WriteString("-- Step 2: once `phiproxy migrate encrypt` has encrypted every value of the table.\n")
	}
}

// writeTable writes the problems of one table and step.
func writeTable(b *strings.Builder, problems []Problem) {
	b.WriteString("\n")
	var pre, post, alters, validates []string
	prefix := ""
	for _, p := range problems {
		what := p.Table
		if p.Column != "" {
			what += "." + p.Column
		}
		if len(p.DDL) == 0 {
			fmt.Fprintf(b, "-- %s: %s (no DDL: decide the fix)\n", what, p.Msg)
		} else {
			fmt.Fprintf(b, "-- %s: %s\n", what, p.Msg)
		}
		for _, s := range p.DDL {
			head, sub, ok := splitAlter(s)
			switch {
			case ok && strings.HasPrefix(sub, "VALIDATE "):
				prefix, validates = head, append(validates, sub)
			case ok:
				prefix, alters = head, append(alters, sub)
			case strings.HasPrefix(s, "DROP INDEX"):
				pre = append(pre, s)
			default:
				post = append(post, s)
			}
		}
	}
	for _, s := range pre {
		b.WriteString(s + "\n")
	}
	writeAlter(b, prefix, alters)
	for _, s := range post {
		b.WriteString(s + "\n")
	}
	writeAlter(b, prefix, validates)
}

func writeAlter(b *strings.Builder, prefix string, subs []string) {
	switch len(subs) {
	case 0:
	case 1:
		fmt.Fprintf(b, "%s %s;\n", prefix, subs[0])
	default:
		fmt.Fprintf(b, "%s\n  %s;\n", prefix, strings.Join(subs, ",\n  "))
	}
}

// splitAlter splits "ALTER TABLE t sub;" into "ALTER TABLE t" and "sub".
// Diff writes table names without spaces (quoted identifiers of policy
// names hold none).
func splitAlter(s string) (head, sub string, ok bool) {
	rest, found := strings.CutPrefix(s, "ALTER TABLE ")
	if !found {
		return "", "", false
	}
	table, sub, found := strings.Cut(rest, " ")
	if !found {
		return "", "", false
	}
	return "ALTER TABLE " + table, strings.TrimSuffix(sub, ";"), true
}
