package differential

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"testing"
)

// knownDifferent lists the productions (statement tags) on which today's
// proxy answers differently from PostgreSQL, each with the issue item
// whose fix should make it exact. A statement that differs and carries one
// of these tags is reported but does not fail the test; any other
// difference does. A tag listed here must still differ in a run on its
// own (in a statement carrying no other listed tag), or the test fails:
// the list can only shrink as fixes land.
//
// An entry marked leaks is also known to send plaintext PHI to
// PostgreSQL (fail-open): a value found by the leak check is excused only
// when every statement that sent it carries such a tag, and the test fails
// when a tag marked leaks no longer leaks.
var knownDifferent = []knownEntry{}

// knownEntry is one production known to differ.
type knownEntry struct {
	tag   string
	issue string // the issue and item whose fix should make it exact
	why   string
	leaks bool // it also sends plaintext PHI upstream
}

// minCampaignUses is how many uses a known-different tag needs in a
// campaign (a run with another seed or size than CI's) before its not
// differing any more fails the run; with fewer it is only noted.
const minCampaignUses = 30

// checkKnown returns what makes a proxy run fail: differences in
// statements with no known-different tag, and known-different tags that
// no longer differ on their own (or were not exercised). In a campaign
// (strict false) a known tag with few uses is only noted.
func checkKnown(s *stats, strict bool) (problems, notes []string) {
	if s.unexcused > 0 {
		var b strings.Builder
		fmt.Fprintf(&b, "%d statements answered differently in productions not known to differ.\nBy production:", s.unexcused)
		for _, t := range s.sortedTags(func(ts *tagStats) int { return ts.unexcused }) {
			fmt.Fprintf(&b, " %s %d;", t, s.tags[t].unexcused)
		}
		b.WriteString("\nShortest of each kind:")
		for _, k := range diffKinds {
			if e := s.shortestUnexcused[k]; e != nil {
				fmt.Fprintf(&b, "\n  %s: %s\n%s", k, e.text, indent(e.detail, 4))
			}
		}
		problems = append(problems, b.String())
	}
	for _, k := range knownDifferent {
		ts := s.tags[k.tag]
		if ts == nil {
			ts = &tagStats{}
		}
		var msg string
		switch {
		case ts.uses == 0:
			msg = fmt.Sprintf("known-different production %q (issue %s) was not exercised: raise -statements or its weight, or remove it", k.tag, k.issue)
		case ts.soloDiffs == 0:
			msg = fmt.Sprintf("known-different production %q (issue %s) no longer differs on its own in %d uses (%d differences, all with another known tag): remove it from knownDifferent", k.tag, k.issue, ts.uses, ts.different)
		default:
			continue
		}
		if strict || ts.uses >= minCampaignUses {
			problems = append(problems, msg)
		} else {
			notes = append(notes, msg)
		}
	}
	return problems, notes
}

// writeKnownReport appends the state of the known-different list.
func writeKnownReport(w io.Writer, s *stats) {
	fmt.Fprintf(w, "\nknown-different productions (excluded from the assertion): uses, different, different with no other known tag\n")
	for _, k := range knownDifferent {
		ts := s.tags[k.tag]
		if ts == nil {
			ts = &tagStats{}
		}
		fmt.Fprintf(w, "  %-32s %-6s %6d %6d %6d  %s\n", k.tag, k.issue, ts.uses, ts.different, ts.soloDiffs, k.why)
	}
	fmt.Fprintf(w, "differences outside the known list: %d\n", s.unexcused)
}

// TestCheckKnown proves the assertion can fail both ways: a difference
// without a known tag, and a known tag that stopped differing.
func TestCheckKnown(t *testing.T) {
	saved := knownDifferent
	defer func() { knownDifferent = saved }()
	knownDifferent = []knownEntry{{tag: "k.still", issue: "x"}, {tag: "k.fixed", issue: "y"}, {tag: "k.unused", issue: "z"}}
	s := newStats(knownDifferent)
	st := func(tags ...string) *statement {
		sort.Strings(tags)
		return &statement{sql: "SELECT 1", tags: tags}
	}
	diff := verdict{outcome: different, kinds: []string{kindRows}, detail: "rows"}
	s.add(st("k.still", "p"), diff, result{}, result{})
	s.add(st("k.still", "k.fixed"), diff, result{}, result{})
	s.add(st("k.fixed"), verdict{outcome: matched}, result{}, result{})
	s.add(st("p", "q"), diff, result{}, result{})
	problems, notes := checkKnown(s, true)
	if len(notes) > 0 {
		t.Errorf("strict checkKnown returned notes: %v", notes)
	}
	got := strings.Join(problems, "\n")
	for _, want := range []string{
		"1 statements answered differently in productions not known to differ",
		`"k.fixed" (issue y) no longer differs on its own`,
		`"k.unused" (issue z) was not exercised`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("checkKnown lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, `"k.still"`) {
		t.Errorf("checkKnown reports k.still, which differs on its own:\n%s", got)
	}
	// In a campaign, a known tag with few uses is only noted.
	problems, notes = checkKnown(s, false)
	if strings.Contains(strings.Join(problems, "\n"), "k.fixed") || len(notes) != 2 {
		t.Errorf("campaign checkKnown: problems %v, notes %v; want k.fixed and k.unused as notes", problems, notes)
	}
}
