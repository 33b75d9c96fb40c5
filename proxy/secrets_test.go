package proxy

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseAuthFile(t *testing.T) {
	m, err := parseAuthFile([]byte(`; PgBouncer userlist.txt format
"alice" "SCRAM-SHA-256$4096:c2FsdA==$a:b"
  "bo""b"   "md5abc"

# comment
"carol" ""
`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"alice": "SCRAM-SHA-256$4096:c2FsdA==$a:b", `bo"b`: "md5abc", "carol": ""}
	if diff := cmp.Diff(want, m); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	for _, bad := range []string{`alice secret`, `"alice" secret`, `"alice" "s" extra`, `"alice`, `"" "s"`, "\"a\" \"1\"\n\"a\" \"2\""} {
		if _, err := parseAuthFile([]byte(bad)); err == nil {
			t.Errorf("parseAuthFile(%q) accepted", bad)
		} else if strings.Contains(err.Error(), "alice") || strings.Contains(err.Error(), `"s"`) {
			t.Errorf("error %q repeats the line's contents", err)
		}
	}
}
