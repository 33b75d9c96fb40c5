package phi

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/internal/seed"
	"github.com/novamind/phiproxy/rewrite"
)

// BenchmarkSimpleQuery is the proxy's own work on one simple-protocol PHI
// statement with real keys, as the PHI benchmark's pgbench -M simple sends
// it (each text differs in its literals): plan (lexer, shape cache hit,
// instantiation) and rendering (encryption and blind indexes of the
// literals).
func BenchmarkSimpleQuery(b *testing.B) {
	pol, err := seed.Policy()
	if err != nil {
		b.Fatal(err)
	}
	prov, _ := crypto.NewLocalProvider(make([]byte, 32))
	kr, err := crypto.CreateKeyring(context.Background(), b.TempDir()+"/k.json", prov)
	if err != nil {
		b.Fatal(err)
	}
	cols, err := newKeyedColumns(pol, KeyringKeys(kr))
	if err != nil {
		b.Fatal(err)
	}
	var rows [][][]byte
	for ti, t := range pol.Tables() {
		n := 0
		add := func(name string, typ uint32) {
			n++
			rows = append(rows, [][]byte{[]byte(fmt.Sprint(100 + ti)), []byte(t.Schema), []byte(t.Name),
				[]byte(fmt.Sprint(n)), []byte(name), []byte(fmt.Sprint(typ))})
		}
		add("id", 23)
		for _, c := range t.Columns {
			add(c.Name, storageOID(c.Storage))
			if c.BlindIndex != nil {
				add(c.BlindIndex.Column, 25)
			}
		}
	}
	c, err := buildCatalog(pol, rows)
	if err != nil {
		b.Fatal(err)
	}
	st := &dbState{cat: c, plans: rewrite.NewCache(100, pol, c)}
	w := newWriter(cols, nil)
	for name, tmpl := range map[string]string{
		"insert": "INSERT INTO patients (first_name, last_name, date_of_birth, email, phone, city) VALUES ('fn%d', 'ln%d', '1980-01-02', 'e%d@x.org', '555%d', 'city%d')",
		"select": "SELECT id, first_name, last_name, date_of_birth, email, phone, city FROM patients WHERE email = 'e%d@x.org'",
	} {
		b.Run(name, func(b *testing.B) {
			texts := make([]string, 64)
			for i := range texts {
				texts[i] = strings.ReplaceAll(tmpl, "%d", fmt.Sprint(i))
			}
			var buf []byte
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				p, err := st.plan(texts[i%len(texts)], true, rewrite.LexOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if buf, err = w.renderQuery(buf[:0], p); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
