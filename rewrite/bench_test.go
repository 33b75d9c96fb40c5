package rewrite

import (
	"fmt"
	"testing"

	"github.com/novamind/phiproxy/policy"
)

var benchSQL = map[string]string{
	"insert15": "INSERT INTO patients (id, first_name, last_name, date_of_birth, ssn, email, phone, address_line1, address_line2, city, state, postal_code, country, additional_info) " +
		"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
	"selectByEmail": "SELECT id, first_name, last_name, email FROM patients WHERE email = $1",
	"join6NoPHI": "SELECT o.id, o.status, o.total, n.id, a.id, c.id, d.id FROM orders o JOIN notes n ON n.order_id = o.id " +
		"JOIN audits a ON a.order_id = o.id JOIN carts c ON c.order_id = o.id JOIN discounts d ON d.order_id = o.id " +
		"JOIN shipments s ON s.order_id = o.id WHERE o.status = $1 AND s.carrier = $2",
}

func benchPolicy(b *testing.B) *policy.Policy {
	p, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		b.Fatal(err)
	}
	return p
}

func BenchmarkAnalyzeMiss(b *testing.B) {
	pol := benchPolicy(b)
	for _, name := range []string{"insert15", "selectByEmail", "join6NoPHI"} {
		sql := benchSQL[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Analyze(sql, pol, seedCatalog); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAnalyzeHit(b *testing.B) {
	pol := benchPolicy(b)
	for _, name := range []string{"insert15", "selectByEmail", "join6NoPHI"} {
		sql := benchSQL[name]
		b.Run(name, func(b *testing.B) {
			c := NewCache(128, pol, seedCatalog)
			if _, err := c.Analyze(sql); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Analyze(sql); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// simpleTexts returns n simple-protocol texts of one shape, each with its
// own literals, as psql or psycopg2 would send them: the 13-literal INSERT
// of every column of patients, or a SELECT by email.
func simpleTexts(name string, n int) []string {
	out := make([]string, n)
	for i := range out {
		switch name {
		case "insert13":
			out[i] = fmt.Sprintf(`INSERT INTO patients (first_name, last_name, date_of_birth, ssn, email, phone, address_line1, address_line2, city, state, postal_code, country, additional_info) `+
				`VALUES ('Ann%d', 'O''Brien', '1980-01-02', '123-45-%04d', 'ann%d@example.org', '555-1234', '1 Main St', 'Apt %d', 'Springfield', 'IL', '62701', 'US', '{"a":%d}')`, i, i%10000, i, i, i)
		case "selectByEmail":
			out[i] = fmt.Sprintf(`SELECT id, first_name, last_name, email FROM patients WHERE email = 'ann%d@example.org'`, i)
		default:
			panic(name)
		}
	}
	return out
}

// BenchmarkShapeOf is the per-text cost of finding a simple-protocol
// text's shape key: the work AnalyzeSimple does on every text before the
// cache lookup of its shape.
func BenchmarkShapeOf(b *testing.B) {
	for _, name := range []string{"insert13", "selectByEmail"} {
		texts := simpleTexts(name, 1024)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, _, ok := shapeOf(texts[i%len(texts)]); !ok {
					b.Fatal("no shape")
				}
				i++
			}
		})
	}
}

// BenchmarkAnalyzeSimpleHit is AnalyzeSimple of texts whose shape is
// cached: what a simple-protocol PHI statement costs the proxy's rewriter.
func BenchmarkAnalyzeSimpleHit(b *testing.B) {
	pol := benchPolicy(b)
	for _, name := range []string{"insert13", "selectByEmail"} {
		texts := simpleTexts(name, 1024)
		b.Run(name, func(b *testing.B) {
			c := NewCache(128, pol, seedCatalog)
			if _, err := c.AnalyzeSimple(texts[0]); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := c.AnalyzeSimple(texts[i%len(texts)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkAnalyzeSimpleScratchHit is AnalyzeSimpleScratch of texts whose
// shape is cached, with one session's scratch: what a simple-protocol PHI
// statement costs the proxy's rewriter (handleQuery).
func BenchmarkAnalyzeSimpleScratchHit(b *testing.B) {
	pol := benchPolicy(b)
	for _, name := range []string{"insert13", "selectByEmail"} {
		texts := simpleTexts(name, 1024)
		b.Run(name, func(b *testing.B) {
			c := NewCache(128, pol, seedCatalog)
			var sc SimpleScratch
			if _, err := c.AnalyzeSimpleScratch(&sc, texts[0], LexOptions{}); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := c.AnalyzeSimpleScratch(&sc, texts[i%len(texts)], LexOptions{}); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
