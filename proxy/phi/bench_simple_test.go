package phi

import (
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/rewrite"
)

// BenchmarkSimpleQuery is the proxy's own work on one simple-protocol PHI
// statement with real keys, as the PHI benchmark's pgbench -M simple sends
// it (each text differs in its literals): plan (lexer, shape cache hit,
// the text's literal slots in the session's scratch) and rendering (encryption and blind indexes of the
// literals). The prepared/ sub-benchmarks are the same statements with the
// same values as parameters, the work of a Bind of a prepared statement:
// the client's message decoded, rewritten and encoded (issue 13: simple
// within 1.5x of prepared).
func BenchmarkSimpleQuery(b *testing.B) {
	pol, cols, c := seedCatalog(b)
	st := &dbState{cat: c, plans: rewrite.NewCache(100, pol, c)}
	w := newWriter(cols, nil)
	for _, c := range []struct{ name, tmpl, prepared string }{
		{"insert", "INSERT INTO patients (first_name, last_name, date_of_birth, email, phone, city) VALUES ('fn%d', 'ln%d', '1980-01-02', 'e%d@x.org', '555%d', 'city%d')",
			"INSERT INTO patients (first_name, last_name, date_of_birth, email, phone, city) VALUES ($1, $2, $3, $4, $5, $6)"},
		{"select", "SELECT id, first_name, last_name, date_of_birth, email, phone, city FROM patients WHERE email = 'e%d@x.org'",
			"SELECT id, first_name, last_name, date_of_birth, email, phone, city FROM patients WHERE email = $1"},
	} {
		name, tmpl := c.name, c.tmpl
		b.Run("prepared/"+name, func(b *testing.B) {
			p, err := st.plan(c.prepared, false, rewrite.LexOptions{})
			if err != nil {
				b.Fatal(err)
			}
			params := make([][][]byte, 64)
			for i := range params {
				for _, v := range []string{"fn%d", "ln%d", "1980-01-02", "e%d@x.org", "555%d", "city%d"}[:p.ClientParams] {
					params[i] = append(params[i], []byte(strings.ReplaceAll(v, "%d", fmt.Sprint(i))))
				}
			}
			if name == "select" {
				for i := range params {
					params[i] = [][]byte{[]byte(fmt.Sprintf("e%d@x.org", i))}
				}
			}
			// The client's Bind messages, as handleBind receives them.
			msgs := make([][]byte, len(params))
			for i := range params {
				if msgs[i], err = (&pgproto3.Bind{Parameters: params[i]}).Encode(nil); err != nil {
					b.Fatal(err)
				}
			}
			var buf []byte
			var bind pgproto3.Bind
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if err := bind.Decode(msgs[i%len(msgs)][5:]); err != nil {
					b.Fatal(err)
				}
				if err := w.rewriteBind(&bind, p, nil); err != nil {
					b.Fatal(err)
				}
				if buf, err = bind.Encode(buf[:0]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		b.Run(name, func(b *testing.B) {
			texts := make([]string, 64)
			for i := range texts {
				texts[i] = strings.ReplaceAll(tmpl, "%d", fmt.Sprint(i))
			}
			var buf []byte
			var sc rewrite.SimpleScratch // the session's (handleQuery)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				text := texts[i%len(texts)]
				p, err := st.planScratch(&sc, text, true, rewrite.LexOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if buf, err = w.renderQuery(buf[:0], sc.Render(p, text)); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
