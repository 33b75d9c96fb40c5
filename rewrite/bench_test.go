package rewrite

import (
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
