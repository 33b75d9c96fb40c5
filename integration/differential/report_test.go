package differential

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
)

// example is one statement kept for the report: the shortest of its kind.
type example struct {
	text   string
	detail string
}

// keepShortest replaces *e by st when st is shorter.
func keepShortest(e **example, st *statement, detail string) {
	text := st.String()
	if *e == nil || len(text) < len((*e).text) {
		*e = &example{text: text, detail: detail}
	}
}

// tagStats counts the statements that carry one tag.
type tagStats struct {
	uses, matched, refused, different int
	kinds                             map[string]int
	shortestDiff, shortestRefusal     *example
	// soloDiffs counts differences where this is the only known-different
	// tag: the ones that prove the tag still differs (known_test.go).
	soloDiffs int
	// unexcused counts differences of statements without a known tag.
	unexcused int
}

// stats accumulates the verdicts of a run.
type stats struct {
	known                   map[string]bool // known-different tags
	total, matched, refused int
	different, unexcused    int
	tags                    map[string]*tagStats
	kinds                   map[string]int
	shortestKind            map[string]*example
	shortestUnexcused       map[string]*example // by kind
	// failedAlike counts matched statements that failed on both sides
	// with the same SQLSTATE, by SQLSTATE, with the shortest of each.
	failedAlike         map[string]int
	shortestFailedAlike map[string]*example
}

func newStats(known []knownEntry) *stats {
	s := &stats{
		known: map[string]bool{}, tags: map[string]*tagStats{}, kinds: map[string]int{},
		shortestKind: map[string]*example{}, shortestUnexcused: map[string]*example{},
		failedAlike: map[string]int{}, shortestFailedAlike: map[string]*example{},
	}
	for _, k := range known {
		s.known[k.tag] = true
	}
	return s
}

// add records the verdict of one statement.
func (s *stats) add(st *statement, v verdict, a, b result) {
	s.total++
	var knownTags []string
	for _, t := range st.tags {
		if s.known[t] {
			knownTags = append(knownTags, t)
		}
	}
	for _, t := range st.tags {
		ts := s.tags[t]
		if ts == nil {
			ts = &tagStats{kinds: map[string]int{}}
			s.tags[t] = ts
		}
		ts.uses++
		switch v.outcome {
		case matched:
			ts.matched++
		case refused:
			ts.refused++
			keepShortest(&ts.shortestRefusal, st, a.code+" "+a.msg)
		case different:
			ts.different++
			for _, k := range v.kinds {
				ts.kinds[k]++
			}
			keepShortest(&ts.shortestDiff, st, v.detail)
			if len(knownTags) == 1 && knownTags[0] == t {
				ts.soloDiffs++
			}
			if len(knownTags) == 0 {
				ts.unexcused++
			}
		}
	}
	switch v.outcome {
	case matched:
		s.matched++
		if b.failed() {
			s.failedAlike[b.code]++
			e := s.shortestFailedAlike[b.code]
			keepShortest(&e, st, b.msg)
			s.shortestFailedAlike[b.code] = e
		}
	case refused:
		s.refused++
	case different:
		s.different++
		for _, k := range v.kinds {
			s.kinds[k]++
			e := s.shortestKind[k]
			keepShortest(&e, st, v.detail)
			s.shortestKind[k] = e
		}
		if len(knownTags) == 0 {
			s.unexcused++
			for _, k := range v.kinds {
				e := s.shortestUnexcused[k]
				keepShortest(&e, st, v.detail)
				s.shortestUnexcused[k] = e
			}
		}
	}
}

func pct(n, of int) string {
	if of == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(of))
}

// writeReport prints the report of a run.
func (s *stats) writeReport(w io.Writer, title string) {
	fmt.Fprintf(w, "== %s ==\n", title)
	fmt.Fprintf(w, "statements %d: matched %d (%s), refused %d (%s), different %d (%s)\n",
		s.total, s.matched, pct(s.matched, s.total), s.refused, pct(s.refused, s.total),
		s.different, pct(s.different, s.total))
	if s.different > 0 {
		fmt.Fprintf(w, "\ndifferences by kind (a statement may differ in several ways), with the shortest statement:\n")
		for _, k := range diffKinds {
			if s.kinds[k] == 0 {
				continue
			}
			e := s.shortestKind[k]
			fmt.Fprintf(w, "  %-9s %6d  %s\n%s\n", k, s.kinds[k], e.text, indent(e.detail, 20))
		}
		fmt.Fprintf(w, "\ndifferences by production (uses, different, by kind):\n")
		for _, t := range s.sortedTags(func(ts *tagStats) int { return ts.different }) {
			ts := s.tags[t]
			mark := ""
			if s.known[t] {
				mark = " [known]"
			}
			fmt.Fprintf(w, "  %-36s %6d %6d (%s) %s%s\n", t, ts.uses, ts.different, pct(ts.different, ts.uses), kindsString(ts.kinds), mark)
		}
		fmt.Fprintf(w, "\nshortest difference of each production:\n")
		for _, t := range s.sortedTags(func(ts *tagStats) int { return ts.different }) {
			e := s.tags[t].shortestDiff
			fmt.Fprintf(w, "  %s: %s\n%s\n", t, e.text, indent(e.detail, 6))
		}
	}
	if s.refused > 0 {
		fmt.Fprintf(w, "\nrefusal rate by construct (refused/uses), with the shortest refused statement:\n")
		for _, t := range s.sortedTags(func(ts *tagStats) int { return ts.refused }) {
			ts := s.tags[t]
			fmt.Fprintf(w, "  %-36s %6d/%-6d %6s  %s\n%s\n", t, ts.refused, ts.uses, pct(ts.refused, ts.uses),
				ts.shortestRefusal.text, indent(ts.shortestRefusal.detail, 6))
		}
	}
	if len(s.failedAlike) > 0 {
		fmt.Fprintf(w, "\nmatched by failing alike on both sides, by SQLSTATE, with the shortest statement:\n")
		codes := make([]string, 0, len(s.failedAlike))
		for c := range s.failedAlike {
			codes = append(codes, c)
		}
		slices.Sort(codes)
		for _, c := range codes {
			e := s.shortestFailedAlike[c]
			fmt.Fprintf(w, "  %s %6d  %s\n%s\n", c, s.failedAlike[c], e.text, indent(e.detail, 6))
		}
	}
	fmt.Fprintf(w, "\nproductions exercised (uses, matched, refused, different):\n")
	for _, t := range s.sortedTags(func(ts *tagStats) int { return ts.uses }) {
		ts := s.tags[t]
		fmt.Fprintf(w, "  %-36s %6d %6d %6d %6d\n", t, ts.uses, ts.matched, ts.refused, ts.different)
	}
}

// sortedTags returns the tags with a non-zero key, largest first.
func (s *stats) sortedTags(key func(*tagStats) int) []string {
	var out []string
	for t, ts := range s.tags {
		if key(ts) > 0 {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(x, y string) int {
		if c := cmp.Compare(key(s.tags[y]), key(s.tags[x])); c != 0 {
			return c
		}
		return strings.Compare(x, y)
	})
	return out
}

func kindsString(kinds map[string]int) string {
	var parts []string
	for _, k := range diffKinds {
		if kinds[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, kinds[k]))
		}
	}
	return strings.Join(parts, ", ")
}

// indent prefixes each line of s with n spaces.
func indent(s string, n int) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(s, "\n", "\n"+pad)
}
