package proxy

import (
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

func encode(b *testing.B, msgs ...interface{ Encode([]byte) ([]byte, error) }) []byte {
	var out []byte
	for _, m := range msgs {
		var err error
		if out, err = m.Encode(out); err != nil {
			b.Fatal(err)
		}
	}
	return out
}

// BenchmarkPassThrough relays one pgbench -S -M prepared transaction per
// op: Bind/Execute/Sync from the client, BindComplete/DataRow/
// CommandComplete/ReadyForQuery from the server, through the FIFO, as raw
// bytes.
func BenchmarkPassThrough(b *testing.B) {
	client := encode(b,
		&pgproto3.Bind{PreparedStatement: "P0_1", ParameterFormatCodes: []int16{0}, Parameters: [][]byte{[]byte("31337")}},
		&pgproto3.Execute{}, &pgproto3.Sync{})
	server := encode(b,
		&pgproto3.BindComplete{}, &pgproto3.DataRow{Values: [][]byte{[]byte("-2854")}},
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	s := benchSession(&repeatReader{data: client}, &repeatReader{data: server})
	step := func(r *frameReader, handle func(byte, []byte) error, n int) {
		for range n {
			typ, msg, err := r.next()
			if err != nil {
				b.Fatal(err)
			}
			if err := handle(typ, msg); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.SetBytes(int64(len(client) + len(server)))
	b.ReportAllocs()
	for b.Loop() {
		step(s.clientR, s.handleFrontend, 3)
		step(s.serverR, s.handleBackend, 4)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*7), "ns/msg")
}
