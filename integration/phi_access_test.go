package integration

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/policy"
)

// accessTypesPolicy replaces phi_types in phiPolicy: clinicians read
// plaintext, billing a mask of every logical type, intake may only search;
// any other role is denied. patients keeps no rule.
const accessTypesPolicy = `  - name: public.phi_types
    access: { plaintext: [phi_clinician], masked: [phi_billing], search: [phi_intake] }
    columns:
      v_text:        { type: text, blind_index: {}, access: { mask: { last: 3 } } }
      v_varchar:     { type: varchar, access: { mask: { replace: hidden } } }
      v_int4:        { type: int4, blind_index: {}, access: { mask: { replace: 0 } } }
      v_int8:        { type: int8 }
      v_numeric:     { type: numeric, access: { mask: { replace: "0.00" } } }
      v_bool:        { type: bool, access: { mask: { replace: "false" } } }
      v_date:        { type: date, blind_index: {}, access: { mask: year } }
      v_timestamptz: { type: timestamptz, access: { mask: year } }
      v_uuid:        { type: uuid, blind_index: {}, access: { mask: { replace: 00000000-0000-0000-0000-000000000000 } } }
      v_jsonb:       { type: jsonb, access: { mask: { replace: "{}" } } }
      v_bytea:       { type: bytea, storage: bytea, access: { mask: { replace: '\x00' } } }
`

// accessRoles makes the cluster's login roles members of the policy's
// roles: md5_user a clinician, password_user billing through a nested
// role, trust_user intake; scram_user (the tables' owner) none.
const accessRoles = `
DO $$BEGIN CREATE ROLE phi_clinician NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$;
DO $$BEGIN CREATE ROLE phi_billing NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$;
DO $$BEGIN CREATE ROLE phi_billing_staff NOLOGIN IN ROLE phi_billing; EXCEPTION WHEN duplicate_object THEN NULL; END$$;
DO $$BEGIN CREATE ROLE phi_intake NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$;
GRANT phi_clinician TO md5_user;
GRANT phi_billing_staff TO password_user;
GRANT phi_intake TO trust_user;
GRANT SELECT, INSERT, UPDATE ON phi_types, patients TO phi_clinician, phi_billing, phi_intake;
`

// typesRow is one phi_types row as an application reads it; pointers
// where a mask may give NULL.
type typesRow struct {
	Text        string
	Varchar     string
	Int4        int32
	Int8        *int64
	Numeric     float64
	Bool        bool
	Date        time.Time
	Timestamptz time.Time
	UUID        pgtype.UUID
	JSONB       map[string]any
	Bytea       []byte
}

const selectTypes = `SELECT v_text, v_varchar, v_int4, v_int8, v_numeric, v_bool, v_date, v_timestamptz, v_uuid, v_jsonb, v_bytea FROM phi_types WHERE id = $1`

func (r *typesRow) dest() []any {
	return []any{&r.Text, &r.Varchar, &r.Int4, &r.Int8, &r.Numeric, &r.Bool, &r.Date, &r.Timestamptz, &r.UUID, &r.JSONB, &r.Bytea}
}

// TestPHIAccess: one role reads plaintext, one (through a nested role) a
// masked value of every logical type in binary and text formats, one may
// search but not read, and one is denied; each masked or denied access is
// in the audit log.
func TestPHIAccess(t *testing.T) {
	setupPHI(t)
	ctx := context.Background()
	if _, err := connect(t, cluster.SuperuserDSN(phiDatabase)).Exec(ctx, accessRoles); err != nil {
		t.Fatalf("roles: %v", err)
	}
	i := strings.Index(phiPolicy, "  - name: public.phi_types")
	pol, err := policy.Parse([]byte(phiPolicy[:i] + accessTypesPolicy))
	if err != nil {
		t.Fatal(err)
	}

	// A row written through a proxy without access rules, by the owner.
	u := pgtype.UUID{Valid: true}
	rand.Read(u.Bytes[:])
	text := secret("text")
	int8v := int64(1) << 40
	want := typesRow{
		Text: text, Varchar: secret("varchar"), Int4: 4242, Int8: &int8v, Numeric: 12345.6789, Bool: true,
		Date: time.Date(1987, 6, 5, 0, 0, 0, 0, time.UTC), Timestamptz: time.Date(2024, 2, 29, 13, 14, 15, 0, time.UTC),
		UUID: u, JSONB: map[string]any{"dx": secret("dx")}, Bytea: []byte(secret("bytes")),
	}
	var id int32
	js, _ := json.Marshal(want.JSONB)
	if err := phiConn(t, startPHIProxy(t)).QueryRow(ctx, `INSERT INTO phi_types (v_text, v_varchar, v_int4, v_int8, v_numeric, v_bool, v_date, v_timestamptz, v_uuid, v_jsonb, v_bytea)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id`,
		want.Text, want.Varchar, want.Int4, want.Int8, "12345.6789", want.Bool, want.Date, want.Timestamptz, want.UUID, string(js), want.Bytea).Scan(&id); err != nil {
		t.Fatalf("insert: %v", err)
	}

	var auditPath string
	p := startPHIProxyWith(t, phiOptions{policy: pol, auditPath: &auditPath})
	modes := []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol}
	as := func(r pgcluster.Role, mode pgx.QueryExecMode) *pgx.Conn {
		return connect(t, p.dsn(r, phiDatabase), func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = mode })
	}
	denied := func(t *testing.T, err error, what string) {
		t.Helper()
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Fatalf("%s: %v, want 42501", what, err)
		}
	}
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			// Plaintext.
			var got typesRow
			if err := as(pgcluster.MD5User, mode).QueryRow(ctx, selectTypes, id).Scan(got.dest()...); err != nil {
				t.Fatalf("clinician: %v", err)
			}
			got.Timestamptz = got.Timestamptz.UTC()
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("clinician reads (-want +got):\n%s", d)
			}

			// Masked, every type, with the logical types in the result.
			billing := as(pgcluster.PasswordUser, mode)
			got = typesRow{}
			if err := billing.QueryRow(ctx, selectTypes, id).Scan(got.dest()...); err != nil {
				t.Fatalf("billing: %v", err)
			}
			got.Timestamptz = got.Timestamptz.UTC()
			masked := typesRow{
				Text: "****" + text[len(text)-3:], Varchar: "hidden", Int4: 0, Int8: nil, Numeric: 0, Bool: false,
				Date: time.Date(1987, 1, 1, 0, 0, 0, 0, time.UTC), Timestamptz: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
				UUID: pgtype.UUID{Valid: true}, JSONB: map[string]any{}, Bytea: []byte{0},
			}
			if d := cmp.Diff(masked, got); d != "" {
				t.Errorf("billing reads (-want +got):\n%s", d)
			}
			rows, err := billing.Query(ctx, selectTypes, id)
			if err != nil {
				t.Fatal(err)
			}
			var oids []uint32
			for _, f := range rows.FieldDescriptions() {
				oids = append(oids, f.DataTypeOID)
			}
			rows.Close()
			wantOIDs := []uint32{pgtype.TextOID, pgtype.VarcharOID, pgtype.Int4OID, pgtype.Int8OID, pgtype.NumericOID, pgtype.BoolOID,
				pgtype.DateOID, pgtype.TimestamptzOID, pgtype.UUIDOID, pgtype.JSONBOID, pgtype.ByteaOID}
			if d := cmp.Diff(wantOIDs, oids); d != "" {
				t.Errorf("masked result types (-want +got):\n%s", d)
			}
			denied(t, billing.QueryRow(ctx, "SELECT id FROM phi_types WHERE v_int4 = $1", want.Int4).Scan(new(int32)), "billing searches")

			// Search without reading.
			intake := as(pgcluster.TrustUser, mode)
			var found int32
			if err := intake.QueryRow(ctx, "SELECT id FROM phi_types WHERE v_text = $1", text).Scan(&found); err != nil || found != id {
				t.Fatalf("intake searches: id %d, %v", found, err)
			}
			denied(t, intake.QueryRow(ctx, "SELECT v_text FROM phi_types WHERE id = $1", id).Scan(new(string)), "intake reads")

			// Denied: neither read nor search; a refused RETURNING rolls
			// back its transaction. Tables without a rule read as before.
			owner := as(pgcluster.ScramUser, mode)
			denied(t, owner.QueryRow(ctx, "SELECT v_date FROM phi_types WHERE id = $1", id).Scan(new(time.Time)), "owner reads")
			denied(t, owner.QueryRow(ctx, "SELECT id FROM phi_types WHERE v_uuid = $1", want.UUID).Scan(new(int32)), "owner searches")
			tx, err := owner.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "UPDATE phi_types SET v_bool = false WHERE id = $1", id); err != nil {
				t.Fatal(err)
			}
			denied(t, tx.QueryRow(ctx, "UPDATE phi_types SET v_int8 = 7 WHERE id = $1 RETURNING v_text", id).Scan(new(string)), "owner's RETURNING")
			if err := tx.Commit(ctx); !errors.Is(err, pgx.ErrTxCommitRollback) {
				t.Fatalf("commit after the refusal: %v", err)
			}
			var n int
			if err := owner.QueryRow(ctx, "SELECT count(*) FROM patients").Scan(&n); err != nil {
				t.Fatalf("owner on a table without rules: %v", err)
			}
		})
	}

	// The audit log: masked reads and denials, by user.
	recs := readAudit(t, auditPath, 20)
	var maskedReads, deniedReads, deniedSearches int
	for _, r := range recs {
		for _, c := range r.Columns {
			switch {
			case r.User == "password_user" && c.Op == "read" && c.Access == "masked":
				maskedReads++
			case c.Access == "denied" && c.Op == "read" && r.SQLState == "42501":
				deniedReads++
			case c.Access == "denied" && c.Op == "search" && r.SQLState == "42501":
				deniedSearches++
			}
		}
	}
	// Billing read 11 masked columns twice per mode (Scan, then Query).
	if maskedReads != 2*2*11 || deniedReads != 2*3 || deniedSearches != 2*2 {
		t.Errorf("audit: %d masked reads, %d denied reads, %d denied searches; want 44, 6, 4", maskedReads, deniedReads, deniedSearches)
		for _, r := range recs {
			t.Logf("%s %s %s %s %s", r.User, r.Type, r.Statement, r.ops(), r.SQLState)
		}
	}
}
