package rewrite

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/novamind/phiproxy/policy"
)

// TestMentionsPolicy checks the one-pass scan against a plain search for
// each needle in the ASCII-lowered text.
func TestMentionsPolicy(t *testing.T) {
	pol, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		t.Fatal(err)
	}
	asciiLower := func(s string) string {
		b := []byte(s)
		for i := range b {
			b[i] = lower(b[i])
		}
		return string(b)
	}
	reference := func(sql string) bool {
		l := asciiLower(sql)
		for _, t := range pol.Tables() {
			if strings.Contains(l, asciiLower(t.Name)) {
				return true
			}
		}
		if strings.Contains(l, `u&"`) || strings.Contains(l, "execute") {
			return true
		}
		// The keywords, word by word (maximal runs of identifier bytes).
		for i := 0; i < len(l); {
			if !identByte(l[i]) {
				i++
				continue
			}
			j := i
			for j < len(l) && identByte(l[j]) {
				j++
			}
			w := l[i:j]
			if w == "do" && doKeyword(l[:i]) {
				return true
			}
			for _, k := range keywords {
				if w == k.word || k.prefix && strings.HasPrefix(w, k.word) {
					return true
				}
			}
			i = j
		}
		return false
	}
	cases := []string{"", "SELECT 1", "SELECT * FROM PATIENTS", "select * from pAtIeNtS p", "patient", "EXECUTE s(1)",
		`SELECT U&"\\0070atients"`, "SELECT bbalance FROM pgbench_branches", "xpatientsx", "patients",
		"DO $$ BEGIN END $$", "do'x'", "select 1; /* c */ Do $$x$$", "-- c\nDO $$x$$", "INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING",
		"SELECT todo, done FROM t", "CREATE FUNCTION f()", "SELECT functions FROM t", "SELECT x.dblink_exec('a')", "SELECT mydblink()",
		"SELECT query_to_xmlschema('q', true, false, '')", "CREATE DOMAIN d AS int", "SELECT domain_id FROM t"}
	words := []string{"pat", "ients", "PATIENTS", "exe", "cute", "U&", `"`, " ", "clinical_notes", "Ω", "accounts", "acc",
		"do", "DO", ";", "--", "/", "_", "function", "fun", "ction", "dblink", "foreign", "$", "x", "subscription", "rename", "ts_stat"}
	r := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		var b strings.Builder
		for range r.IntN(8) {
			b.WriteString(words[r.IntN(len(words))])
		}
		cases = append(cases, b.String())
	}
	for _, c := range cases {
		if got, want := mentionsPolicy(c, pol), reference(c); got != want {
			t.Fatalf("mentionsPolicy(%q) = %v, want %v", c, got, want)
		}
	}
}

// TestMentionsPolicyKeywords: texts that reach a policy table by a name the
// byte scan cannot see are parsed; ordinary words that contain a keyword
// are not.
func TestMentionsPolicyKeywords(t *testing.T) {
	pol, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		t.Fatal(err)
	}
	for sql, want := range map[string]bool{
		`DO E'BEGIN \x45XECUTE ''INSERT INTO pat'' || ''ients (city) VALUES (1)''; END'`: true,
		"do$$ x $$":                                       false, // one identifier for the server too
		"SELECT 1;DO $$BEGIN END$$":                       true,
		"/* x */DO $$BEGIN END$$":                         true,
		"-- x\nDO $$BEGIN END$$":                          true,
		"INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING": false,
		"SELECT todo, undo, done FROM t":                  false,
		"CREATE OR REPLACE FUNCTION f() RETURNS int AS 'x' LANGUAGE sql":            true,
		"CREATE PROCEDURE p() AS 'x' LANGUAGE sql":                                  true,
		"SELECT function_id FROM t":                                                 false,
		"CREATE FOREIGN TABLE x () SERVER s OPTIONS (table_name U&'pat\\0069ents')": true,
		"IMPORT FOREIGN SCHEMA public FROM SERVER s INTO x":                         true,
		"CREATE SUBSCRIPTION s CONNECTION 'c' PUBLICATION p":                        true,
		"SELECT subscriptions FROM t":                                               false,
		"CREATE DOMAIN text AS pg_catalog.text DEFAULT 'x'":                         true,
		"ALTER TYPE d RENAME TO text":                                               true,
		"SELECT dblink_exec('dbname=x', 'select 1')":                                true,
		`SELECT "dblink"('c', 'q')`:                                                 true,
		"SELECT public.query_to_xml('select 1', true, false, '')":                   true,
		"SELECT ts_stat('select v from t')":                                         true,
		"SELECT my_ts_stat(1)":                                                      false,
	} {
		if got := mentionsPolicy(sql, pol); got != want {
			t.Errorf("mentionsPolicy(%q) = %v, want %v", sql, got, want)
		}
	}
}

// BenchmarkMentionsPolicy is the byte scan of a simple-protocol text on a
// policy table, which every text pays before anything else.
func BenchmarkMentionsPolicy(b *testing.B) {
	pol, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"insert13", "selectByEmail"} {
		sql := simpleTexts(name, 1)[0]
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(sql)))
			for b.Loop() {
				if !mentionsPolicy(sql, pol) {
					b.Fatal("no mention")
				}
			}
		})
	}
	b.Run("noPolicyTable", func(b *testing.B) {
		sql := "SELECT o.id, o.status, o.total FROM orders o JOIN notes n ON n.order_id = o.id WHERE o.status = 'shipped' AND n.body <> 'x'"
		b.SetBytes(int64(len(sql)))
		for b.Loop() {
			if mentionsPolicy(sql, pol) {
				b.Fatal("a mention")
			}
		}
	})
}
