package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/internal/seed"
	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/proxy/phi"
)

// The demo's PHI part: a dev keyring kept in the demo directory, the seed
// schema of config.example.yaml's policy, a few made-up patients inserted
// through the proxy, and one of them shown as the application sees it and as
// PostgreSQL stores it.

func init() {
	demoSteps = append(demoSteps, demoKeys, demoSchema)
	demoLiveSteps = append(demoLiveSteps, demoInsertSamples, demoShowRow)
}

// demoKeys loads the demo policy and opens the dev keyring in env.dir
// (keyring.json, wrapped by the local master key master.key), creating both
// on the first run, and makes the proxy enforce the policy.
// PHIPROXY_MASTER_KEY is ignored: the demo's key is its own file.
func demoKeys(ctx context.Context, env *demoEnv) error {
	pol, err := seed.Policy()
	if err != nil {
		return fmt.Errorf("demo policy: %w", err)
	}
	cfg := crypto.Config{
		KeyringFile: filepath.Join(env.dir, "keyring.json"),
		Provider:    crypto.ProviderLocal,
		Local:       crypto.LocalConfig{MasterKeyFile: filepath.Join(env.dir, "master.key")},
	}
	if !fileExists(cfg.Local.MasterKeyFile) {
		if err := crypto.WriteNewMasterKeyFile(cfg.Local.MasterKeyFile); err != nil {
			return fmt.Errorf("demo keys: %w", err)
		}
		fmt.Fprintf(env.stdout, "Created a local master key in %s (development only)\n", cfg.Local.MasterKeyFile)
	}
	noEnv := func(string) string { return "" }
	p, err := newKeyProvider(ctx, cfg, noEnv)
	if err != nil {
		return fmt.Errorf("demo keys: %w", err)
	}
	var kr *crypto.Keyring
	if fileExists(cfg.KeyringFile) {
		if kr, err = crypto.OpenKeyring(ctx, cfg.KeyringFile, p); err != nil {
			return fmt.Errorf("demo keys: %w (the demo's data is thrown away on exit: delete %s and %s to start over)",
				err, cfg.KeyringFile, cfg.Local.MasterKeyFile)
		}
	} else {
		if kr, err = crypto.CreateKeyring(ctx, cfg.KeyringFile, p); err != nil {
			return fmt.Errorf("demo keys: %w", err)
		}
		fmt.Fprintf(env.stdout, "Created the dev keyring %s (data key %d, wrapped by %s)\n", cfg.KeyringFile, kr.ActiveKeyID(), kr.Keys()[0].MasterKeyID)
	}
	env.policy, env.keyring = pol, kr
	eng, err := phi.New(pol, phi.KeyringKeys(kr), env.reg, phi.Config{})
	if err != nil {
		return err
	}
	env.opts = append(env.opts, proxy.WithInterceptor(eng))
	return nil
}

// demoSchema creates the policy's tables in the demo database, directly
// (not through the proxy), as their owner, and checks them as phiproxy
// schema does.
func demoSchema(ctx context.Context, env *demoEnv) error {
	conn, err := pgx.Connect(ctx, env.directDSN())
	if err != nil {
		return fmt.Errorf("demo schema: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, seed.SchemaSQL(env.policy, true)); err != nil {
		return fmt.Errorf("demo schema: %w", err)
	}
	// What phiproxy schema would say: nothing may be missing.
	live, err := readCatalog(ctx, conn, env.policy)
	if err != nil {
		return fmt.Errorf("demo schema: %w", err)
	}
	if problems := policy.Diff(env.policy, live); len(problems) > 0 {
		return fmt.Errorf("demo schema: the tables are not ready for the policy:\n%s", policy.Script(problems))
	}
	return nil
}

// demoPatient is a made-up sample patient: none of these people exist, the
// SSNs are in the never-issued 9xx range and the phone numbers in the
// fictional 555-01xx block.
type demoPatient struct {
	first, last, email, ssn, phone string
	dob                            time.Time
	street, city, state, postal    string
	info                           map[string]any
}

var demoPatients = []demoPatient{
	{"Ada", "Quill", "ada.quill@example.org", "900-12-3456", "+1 (555) 010-0101",
		time.Date(1985, 3, 14, 0, 0, 0, 0, time.UTC), "12 Lantern Way", "Springfield", "IL", "62704",
		map[string]any{"allergies": []string{"penicillin"}, "preferred_language": "en"}},
	{"Bram", "Okonkwo-Lind", "bram.ol@example.com", "900-65-4321", "555-010-0202",
		time.Date(1972, 11, 2, 0, 0, 0, 0, time.UTC), "401 Birch Row", "Riverton", "WY", "82501",
		map[string]any{"emergency_contact": "Ines Lind"}},
	{"Chiara", "Vance", "chiara.vance@example.net", "900-11-2233", "(555) 010-0303",
		time.Date(1999, 7, 30, 0, 0, 0, 0, time.UTC), "7 Harbour St", "Fairhaven", "MA", "02719",
		nil},
}

// demoNotes are made-up clinical notes: the index into demoPatients and the
// diagnosis, medication and treatment notes.
var demoNotes = []struct {
	patient                          int
	diagnosis, medication, treatment string
}{
	{0, "Seasonal allergic rhinitis", "Cetirizine 10 mg daily", "Review in 3 months; avoid known triggers."},
	{2, "Sprained left ankle", "Ibuprofen 400 mg as needed", "RICE for 72 hours; physiotherapy referral."},
}

// demoInsertSamples inserts the sample patients and notes through the
// proxy, which encrypts them on the way. Tables that already hold patients
// are left as they are.
func demoInsertSamples(ctx context.Context, env *demoEnv) error {
	conn, err := pgx.Connect(ctx, env.proxyDSN())
	if err != nil {
		return fmt.Errorf("demo samples: connect through the proxy: %w", err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM patients").Scan(&n); err != nil {
		return fmt.Errorf("demo samples: %w", err)
	}
	if n > 0 {
		return nil
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("demo samples: %w", err)
	}
	defer tx.Rollback(context.Background())
	ids := make([]int64, len(demoPatients))
	for i, p := range demoPatients {
		err := tx.QueryRow(ctx, `INSERT INTO patients (first_name, last_name, date_of_birth, ssn, email, phone,
  address_line1, city, state, postal_code, country, additional_info)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'US', $11) RETURNING id`,
			p.first, p.last, p.dob, p.ssn, p.email, p.phone, p.street, p.city, p.state, p.postal, p.info).Scan(&ids[i])
		if err != nil {
			return fmt.Errorf("demo samples: insert patient %d: %w", i+1, err)
		}
	}
	for i, n := range demoNotes {
		if _, err := tx.Exec(ctx, `INSERT INTO clinical_notes (patient_id, diagnosis, medication, treatment_notes) VALUES ($1, $2, $3, $4)`,
			ids[n.patient], n.diagnosis, n.medication, n.treatment); err != nil {
			return fmt.Errorf("demo samples: insert note %d: %w", i+1, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("demo samples: %w", err)
	}
	fmt.Fprintf(env.stdout, "Inserted %d patients and %d clinical notes through phiproxy (encrypted on the way in).\n", len(demoPatients), len(demoNotes))
	return nil
}

// demoShowQuery is what the demo runs through the proxy, as psql would
// (simple protocol, the email as a literal).
func demoShowQuery(email string) string {
	return "SELECT id, first_name, last_name, email, date_of_birth FROM patients WHERE email = '" +
		strings.ReplaceAll(email, "'", "''") + "'"
}

// demoRowViews is one patient as the application sees it through the proxy
// and as PostgreSQL stores it.
type demoRowViews struct {
	id     int64
	app    [4]string // first_name, last_name, email, date_of_birth
	stored [5]string // the same, then email_bidx
}

// demoReadRow reads the sample patient with that email through the proxy
// and then over a direct connection.
func demoReadRow(ctx context.Context, env *demoEnv, email string) (demoRowViews, error) {
	var v demoRowViews
	conn, err := pgx.Connect(ctx, env.proxyDSN())
	if err != nil {
		return v, fmt.Errorf("connect through the proxy: %w", err)
	}
	defer conn.Close(context.Background())
	var dob time.Time
	if err := conn.QueryRow(ctx, demoShowQuery(email), pgx.QueryExecModeSimpleProtocol).
		Scan(&v.id, &v.app[0], &v.app[1], &v.app[2], &dob); err != nil {
		return v, fmt.Errorf("through the proxy: %w", err)
	}
	v.app[3] = dob.Format(time.DateOnly)

	direct, err := pgx.Connect(ctx, env.directDSN())
	if err != nil {
		return v, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer direct.Close(context.Background())
	if err := direct.QueryRow(ctx, "SELECT first_name, last_name, email, date_of_birth, email_bidx FROM patients WHERE id = $1", v.id).
		Scan(&v.stored[0], &v.stored[1], &v.stored[2], &v.stored[3], &v.stored[4]); err != nil {
		return v, fmt.Errorf("direct: %w", err)
	}
	return v, nil
}

// demoShowRow prints the first sample patient side by side: through the
// proxy and as stored.
func demoShowRow(ctx context.Context, env *demoEnv) error {
	email := demoPatients[0].email
	v, err := demoReadRow(ctx, env, email)
	if err != nil {
		return fmt.Errorf("demo row: %w", err)
	}
	w := env.stdout
	fmt.Fprintf(w, "\nOne patient, two views of the same row (id %d):\n\n", v.id)
	fmt.Fprintf(w, "  through phiproxy: %s\n", demoShowQuery(email))
	fmt.Fprintf(w, "  in PostgreSQL:    SELECT first_name, last_name, email, date_of_birth, email_bidx FROM patients WHERE id = %d\n\n", v.id)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  column\tthe application sees (phiproxy)\tPostgreSQL stores (direct connection)")
	names := []string{"first_name", "last_name", "email", "date_of_birth"}
	for i, name := range names {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", name, v.app[i], truncate(v.stored[i], 40))
	}
	fmt.Fprintf(tw, "  email_bidx\t(hidden)\t%s  (blind index: HMAC of the email)\n", v.stored[4])
	return tw.Flush()
}

// truncate shortens s to n bytes (ASCII: ciphertext is base64), marking the
// cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
