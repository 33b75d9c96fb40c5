package differential

import (
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
)

// TestNumericText checks the binary numeric renderer against pgtype's own
// encoding, including the scales pgtype's decoder drops.
func TestNumericText(t *testing.T) {
	m := pgtype.NewMap()
	for _, in := range []string{"0", "0.0", "0.000", "1.50", "-2.25", "10", "10000", "123456789012345678901234567890.123456789",
		"0.000001", "-0.5", "1000.0001", "NaN", "Infinity", "-Infinity"} {
		var n pgtype.Numeric
		if err := n.Scan(in); err != nil {
			t.Fatalf("scan %s: %v", in, err)
		}
		bin, err := m.Encode(pgtype.NumericOID, pgtype.BinaryFormatCode, n, nil)
		if err != nil {
			t.Fatalf("encode %s: %v", in, err)
		}
		if got, ok := numericText(bin); !ok || got != in {
			t.Errorf("numericText(%s) = %q, %v", in, got, ok)
		}
	}
	// PostgreSQL's own binary form of 0.0: no digits, display scale 1.
	if got, _ := numericText([]byte{0, 0, 0, 0, 0, 0, 0, 1}); got != "0.0" {
		t.Errorf("numericText(PostgreSQL 0.0) = %q", got)
	}
}
