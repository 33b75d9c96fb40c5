package phi

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/internal/seed"
	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/rewrite"
)

// seedCatalog is a catalog of the seed policy's tables (an id, each PHI
// column, then its blind-index columns) and keys for them.
func seedCatalog(tb testing.TB) (*policy.Policy, keyedColumns, *catalog) {
	tb.Helper()
	pol, err := seed.Policy()
	if err != nil {
		tb.Fatal(err)
	}
	prov, _ := crypto.NewLocalProvider(make([]byte, 32))
	kr, err := crypto.CreateKeyring(context.Background(), tb.TempDir()+"/k.json", prov)
	if err != nil {
		tb.Fatal(err)
	}
	cols, err := newKeyedColumns(pol, KeyringKeys(kr))
	if err != nil {
		tb.Fatal(err)
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
			for _, bi := range c.Indexes() {
				add(bi.Column, 25)
			}
		}
	}
	c, err := buildCatalog(pol, rows)
	if err != nil {
		tb.Fatal(err)
	}
	return pol, cols, c
}

// BenchmarkCopyIn is the proxy's work per row of COPY FROM STDIN of the
// seed's patients, 6 PHI values of which 2 are indexed (4 blind indexes),
// in 64 KiB CopyData messages: read, check, encrypt, index, write.
func BenchmarkCopyIn(b *testing.B) {
	pol, cols, cat := seedCatalog(b)
	plan, err := rewrite.Analyze("COPY patients (first_name, last_name, date_of_birth, ssn, email, city) FROM STDIN", pol, cat)
	if err != nil || plan.Copy == nil {
		b.Fatalf("plan: %v", err)
	}
	var data strings.Builder
	const rows = 10000
	for i := range rows {
		fmt.Fprintf(&data, "First%d\tLast%d\t19%02d-%02d-%02d\t%03d-45-%04d\tperson%d@example.org\tCity %d\n", i, i, 30+i%70, 1+i%12, 1+i%28, i%1000, i, i, i%100)
	}
	in := []byte(data.String())
	s := &session{w: newWriter(cols, nil)}
	s.w.codec.settings = func() (*sessionSettings, error) { return &sessionSettings{}, nil }
	out := 0
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		c := s.newCopyIn(plan.Copy, nil)
		c.forward = func(m []byte) error { out += len(m); return nil }
		for at := 0; at < len(in); at += 64 << 10 {
			c.r.feed(in[at:min(at+64<<10, len(in))])
			if err := c.rows(false); err != nil || c.done {
				b.Fatalf("rows: %v", err)
			}
		}
		if err := c.rows(true); err != nil || c.done {
			b.Fatalf("rows: %v", err)
		}
	}
	b.ReportMetric(float64(b.N*rows)/time.Since(start).Seconds(), "rows/s")
}

// BenchmarkCopyOut is the proxy's work per row of COPY TO STDOUT of the
// same patients: read the server's row, decrypt 6 values, write the
// client's row (CSV).
func BenchmarkCopyOut(b *testing.B) {
	pol, cols, cat := seedCatalog(b)
	sql := "COPY patients (first_name, last_name, date_of_birth, ssn, email, city) TO STDOUT (FORMAT csv)"
	plan, err := rewrite.Analyze(sql, pol, cat)
	if err != nil || plan.Copy == nil {
		b.Fatalf("plan: %v", err)
	}
	w := newWriter(cols, nil)
	w.codec.settings = func() (*sessionSettings, error) { return &sessionSettings{}, nil }
	// The server's rows: what COPY FROM stored.
	var msgs [][]byte
	const rows = 10000
	for i := range rows {
		line := []byte{'d', 0, 0, 0, 0}
		for j, v := range []string{fmt.Sprint("First", i), fmt.Sprint("Last", i), "1980-05-12", fmt.Sprintf("%03d-45-%04d", i%1000, i), fmt.Sprintf("person%d@example.org", i), fmt.Sprint("City", i%100)} {
			if j > 0 {
				line = append(line, '\t')
			}
			if line, err = cols[plan.Copy.Columns[j].Column].transform(line, rewrite.ActionEncrypt, nil, []byte(v)); err != nil {
				b.Fatal(err)
			}
		}
		line = append(line, '\n')
		binary.BigEndian.PutUint32(line[1:], uint32(len(line)-1))
		msgs = append(msgs, line)
	}
	st := &sessionSettings{}
	st = st.withSetting("DateStyle", "ISO, MDY")
	var ptr atomic.Pointer[sessionSettings]
	ptr.Store(st)
	s := &session{eng: &Engine{cols: cols}, r: newReader(nil, &ptr)}
	c, err := s.newCopyResult(plan, true)
	if err != nil {
		b.Fatal(err)
	}
	var dst []byte
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		for _, m := range msgs {
			if dst, err = c.out.CopyData(dst[:0], m); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N*rows)/time.Since(start).Seconds(), "rows/s")
}
