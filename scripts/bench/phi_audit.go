package main

// -audit: the PHI workload through phiproxy with an audit log (issue 12.1),
// and with an audit log and masks for the benchmark role (issue 12.2),
// against phiproxy without them in the same interleaved run.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/internal/auditlog"
	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/internal/seed"
	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/proxy/phi"
)

// phiVariant is a second PHI proxy on the same database and keys.
type phiVariant struct {
	name  string
	srv   *proxy.Server
	audit *auditlog.Log
	path  string
	reg   *prometheus.Registry
}

func (v *phiVariant) close() {
	if v.srv != nil {
		v.srv.Close()
	}
	if v.audit != nil {
		v.audit.Close()
	}
}

// startAuditVariants starts the two variants: the seed policy with an
// audit log, and a policy that masks every column for role (searching
// allowed) with an audit log. Audit files go to dir.
func startAuditVariants(ctx context.Context, cluster *pgcluster.Cluster, kr *crypto.Keyring, dir, role string) ([]*phiVariant, error) {
	plain, err := seed.PolicyFor(phiEncryptedDB)
	if err != nil {
		return nil, err
	}
	masked, err := maskedPolicy(plain, role)
	if err != nil {
		return nil, err
	}
	var out []*phiVariant
	for _, v := range []struct {
		name string
		pol  *policy.Policy
	}{{"+ audit", plain}, {"+ audit + masks", masked}} {
		pv := &phiVariant{name: v.name, reg: prometheus.NewRegistry(), path: filepath.Join(dir, fmt.Sprintf("audit-%d.log", len(out)))}
		out = append(out, pv)
		cfg := auditlog.Config{File: pv.path}
		cfg.SetDefaults()
		logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		if pv.audit, err = auditlog.Open(cfg, logger, pv.reg); err != nil {
			return out, err
		}
		eng, err := phi.New(v.pol, phi.KeyringKeys(kr), pv.reg, phi.Config{Audit: pv.audit})
		if err != nil {
			return out, err
		}
		if pv.srv, err = startProxy(ctx, cluster, pv.reg, proxy.WithInterceptor(eng)); err != nil {
			return out, err
		}
	}
	return out, nil
}

// check makes sure the variant does what it claims: through it patient
// 4242 is found by email, its values masked or not as the variant says,
// and the audit log records the read.
func (v *phiVariant) check(ctx context.Context, owner pgcluster.Role) error {
	c, err := pgx.Connect(ctx, pgcluster.DSN("127.0.0.1", proxyPort(v.srv), owner, phiEncryptedDB, "require", ""))
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	var email, first string
	var dob time.Time
	if err := c.QueryRow(ctx, "SELECT email, first_name, date_of_birth FROM patients WHERE email = '4242'").Scan(&email, &first, &dob); err != nil {
		return fmt.Errorf("check through phiproxy %s: %w", v.name, err)
	}
	wantEmail, wantFirst, wantDOB := "4242", "First4242", time.Date(1930+4242%75, time.Month(1+4242%12), 1+4242%28, 0, 0, 0, 0, time.UTC)
	if strings.Contains(v.name, "masks") {
		wantEmail, wantFirst, wantDOB = "****", "****4242", time.Date(wantDOB.Year(), 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if email != wantEmail || first != wantFirst || !dob.Equal(wantDOB) {
		return fmt.Errorf("check through phiproxy %s: got email %q first_name %q date_of_birth %s; want %q %q %s",
			v.name, email, first, dob.Format(time.DateOnly), wantEmail, wantFirst, wantDOB.Format(time.DateOnly))
	}
	fmt.Printf("check: through phiproxy %s email=%q first_name=%q date_of_birth=%s\n", v.name, email, first, dob.Format(time.DateOnly))
	return nil
}

// maskedPolicy is pol with an access rule on every table that shows role
// masked values it may still search by: text columns their last 4
// characters, dates their year, others a fixed value. Every mask but null
// decrypts, so the comparison is not flattered.
func maskedPolicy(pol *policy.Policy, role string) (*policy.Policy, error) {
	var b strings.Builder
	b.WriteString("tables:\n")
	for _, t := range pol.Tables() {
		fmt.Fprintf(&b, "  - name: %s\n    access: { masked: [%q], search: [%q] }\n    columns:\n", t.QualifiedName(), role, role)
		for _, c := range t.Columns {
			fmt.Fprintf(&b, "      %s: { type: %s, storage: %s, associated_data: %q", c.Name, c.Type, c.Storage, c.AssociatedData)
			if bi := c.BlindIndex; bi != nil {
				fmt.Fprintf(&b, ", blind_index: { column: %s, normalize: [%s], bits: %d, index_group: %q }",
					bi.Column, strings.Join(bi.Normalize, ", "), bi.Bits, bi.Group)
			}
			var search []string
			for _, si := range c.Search {
				if si.V1 { // the v1 form: blind_index with normalize
					fmt.Fprintf(&b, ", blind_index: { column: %s, normalize: [%s], bits: %d, index_group: %q }",
						si.Column, strings.Join(si.Normalize, ", "), si.Bits, si.Group)
					continue
				}
				search = append(search, fmt.Sprintf("%s: { column: %s, normalize: [%s], bits: %d }", si.Name, si.Column, strings.Join(si.Normalize, ", "), si.Bits))
			}
			if len(search) > 0 {
				fmt.Fprintf(&b, ", search: { %s }", strings.Join(search, ", "))
			}
			switch c.Type {
			case policy.TypeText, policy.TypeVarchar:
				b.WriteString(", access: { mask: { last: 4 } }")
			case policy.TypeDate, policy.TypeTimestamptz:
				b.WriteString(", access: { mask: year }")
			case policy.TypeJSONB:
				b.WriteString(`, access: { mask: { replace: "{}" } }`)
			}
			b.WriteString(" }\n")
		}
	}
	return policy.Parse([]byte(b.String()))
}

// checkVariants closes the variants' audit logs, verifies their chains
// and describes them.
func (b *phiBench) checkVariants() ([]string, error) {
	var notes []string
	for _, v := range b.variants {
		v.audit.Close()
		sums, err := auditlog.VerifyFiles(v.path)
		if err != nil {
			return nil, fmt.Errorf("audit log of phiproxy %s: %w", v.name, err)
		}
		st, err := os.Stat(v.path)
		if err != nil {
			return nil, err
		}
		notes = append(notes, fmt.Sprintf("audit log of phiproxy %s: %d records (%.1f MB, %.0f B/record), chain verified; %.0f lost",
			v.name, sums[0].Records, float64(st.Size())/1e6, float64(st.Size())/float64(max(1, sums[0].Records)),
			snapshot(v.reg)["phiproxy_audit_lost_records_total"]))
	}
	return notes, nil
}

// printVariants prints each variant's throughput relative to phiproxy
// without it (target ref) and notes on their audit logs.
func (b *phiBench) printVariants(m matrix, ref int, notes []string) {
	if len(b.variants) == 0 {
		return
	}
	fmt.Println("\nissue 12: throughput relative to \"encrypted via phiproxy\" in the same run (goal >= 0.95), CPU µs/tx of each:")
	for wi, w := range m.workloads {
		line := fmt.Sprintf("  %-14s", w.name)
		for vi, v := range b.variants {
			ti := ref + 1 + vi
			line += fmt.Sprintf("  %s: %s", strings.TrimPrefix(v.name, "+ "), m.ratio(wi, ti, ref))
			if c := mean(m.results[[2]int{wi, ti}]).cpuPerXact(); c >= 0 {
				line += fmt.Sprintf(" (%.1f µs/tx)", c)
			}
		}
		if c := mean(m.results[[2]int{wi, ref}]).cpuPerXact(); c >= 0 {
			line += fmt.Sprintf("; without: %.1f µs/tx", c)
		}
		fmt.Println(line)
	}
	for _, n := range notes {
		fmt.Println("  " + n)
	}
}
