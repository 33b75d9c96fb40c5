package integration

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/internal/pgcluster"
)

// The analysis lexes as PostgreSQL does with standard_conforming_strings
// on and client_encoding UTF8. These tests try to make the server read a
// statement on a PHI table differently from the proxy by changing those
// settings: with them known and different, in the same pipeline, and
// through the extended protocol, where PostgreSQL 14+ reports the change
// only at ReadyForQuery. Each must be refused (or read exactly), with no
// plaintext stored.

// attack is the literal of issue 9: with standard_conforming_strings off
// the server reads '\' || ' as one literal, so what the proxy took for the
// rest of the statement would be a value, and the value a statement.
const scsAttack = `INSERT INTO patients (city, last_name) VALUES ('\' || ' ), $$%s$$) --', 'x')`

func TestSettingsStandardConformingStrings(t *testing.T) {
	p := startPHIProxy(t)
	hc := rawSession(t, p.dsn(pgcluster.ScramUser, phiDatabase))

	// Known off: a text without backslashes reads the same either way.
	exchange(t, hc, &pgproto3.Query{String: "SET standard_conforming_strings = off"})
	v := secret("scs-plain")
	out := exchange(t, hc, &pgproto3.Query{String: "INSERT INTO patients (city) VALUES ('" + v + "')"})
	if hasError(out, "0A000") || !strings.Contains(strings.Join(out, ""), "INSERT 0 1") {
		t.Fatalf("insert without backslashes, standard_conforming_strings off: %v", out)
	}
	// One with a backslash is read as the server reads it (the simple
	// protocol's lexer knows the setting) or refused: never misread. Here
	// the server sees a syntax error, and so does the proxy.
	w := secret("scs-known")
	out = exchange(t, hc, &pgproto3.Query{String: strings.Replace(scsAttack, "%s", w, 1)})
	if !hasError(out, "42601") && !hasError(out, "0A000") {
		t.Fatalf("backslash literal, standard_conforming_strings off: %v", out)
	}
	// Read as the server reads it, this one stores the city ' || ' and the
	// last name in dollar quotes: both must be encrypted, or refused.
	w2 := secret("scs-dollar")
	out = exchange(t, hc, &pgproto3.Query{String: `INSERT INTO patients (city, last_name) VALUES ('' || ', $$` + w2 + `$$) --', 'x')`})
	if len(out) == 0 || (!hasError(out, "0A000") && !strings.Contains(strings.Join(out, ""), "INSERT 0 1")) {
		t.Fatalf("backslash literal and dollar quotes, standard_conforming_strings off: %v", out)
	}
	noPlaintextLastName(t, w2)
	exchange(t, hc, &pgproto3.Query{String: "SET standard_conforming_strings = on"})

	// Pipelined behind the SET, in one write: the proxy cannot know yet.
	x := secret("scs-pipelined")
	out = exchangeN(t, hc, 2, &pgproto3.Query{String: "SET standard_conforming_strings = off"},
		&pgproto3.Query{String: strings.Replace(scsAttack, "%s", x, 1)})
	if !hasError(out, "0A000") {
		t.Fatalf("pipelined behind SET: %v", out)
	}
	exchange(t, hc, &pgproto3.Query{String: "SET standard_conforming_strings = on"})

	// Extended protocol: the SET executes, its CommandComplete arrives,
	// then the INSERT is parsed before Sync; PostgreSQL 14+ reports the
	// change only at ReadyForQuery.
	y := secret("scs-extended")
	out = exchange(t, hc,
		&pgproto3.Parse{Query: "SET standard_conforming_strings = off"}, &pgproto3.Bind{}, &pgproto3.Execute{},
		&pgproto3.Parse{Query: strings.Replace(scsAttack, "%s", y, 1)}, &pgproto3.Bind{}, &pgproto3.Execute{},
		&pgproto3.Sync{})
	if !hasError(out, "0A000") {
		t.Fatalf("extended protocol before Sync: %v", out)
	}
	exchange(t, hc, &pgproto3.Query{String: "SET standard_conforming_strings = on"})

	// set_config in a function call changes it just as well.
	z := secret("scs-setconfig")
	out = exchangeN(t, hc, 2, &pgproto3.Query{String: "SELECT set_config('standard_conforming_strings', 'off', false)"},
		&pgproto3.Query{String: strings.Replace(scsAttack, "%s", z, 1)})
	if !hasError(out, "0A000") {
		t.Fatalf("pipelined behind set_config: %v", out)
	}
	for _, s := range []string{w, w2, x, y, z} {
		noPlaintextCity(t, s)
		noPlaintextCity(t, s+"$$) --")
	}
}

func TestSettingsClientEncoding(t *testing.T) {
	p := startPHIProxy(t)
	hc := rawSession(t, p.dsn(pgcluster.ScramUser, phiDatabase))

	// In SJIS the byte after 0x95 is part of the character: 0x95 0x5c is
	// one character whose second byte is a backslash to a UTF-8 reader.
	v := secret("sjis")
	attack := "INSERT INTO patients (city, last_name) VALUES (E'\x95\\' || ' ), $$" + v + "$$) --', 'x')"
	out := exchange(t, hc, &pgproto3.Query{String: "SET client_encoding = 'SJIS'"})
	if hasError(out, "") && strings.Contains(strings.Join(out, ""), "ErrorResponse") {
		t.Fatalf("SET client_encoding: %v", out)
	}
	out = exchange(t, hc, &pgproto3.Query{String: attack})
	if !hasError(out, "0A000") {
		t.Fatalf("non-ASCII statement under SJIS: %v", out)
	}
	// A value beyond ASCII bound under LATIN1 would be converted by the
	// server, not by the proxy: refused.
	exchange(t, hc, &pgproto3.Query{String: "SET client_encoding = 'LATIN1'"})
	out = exchange(t, hc, &pgproto3.Parse{Query: insertCity}, &pgproto3.Bind{Parameters: [][]byte{[]byte("Z\xfcrich-" + v)}},
		&pgproto3.Execute{}, &pgproto3.Sync{})
	if !hasError(out, "0A000") {
		t.Fatalf("non-ASCII value under LATIN1: %v", out)
	}
	// Pipelined behind the change, a UTF-8 text cannot be read for certain.
	exchange(t, hc, &pgproto3.Query{String: "SET client_encoding = 'UTF8'"})
	out = exchangeN(t, hc, 2, &pgproto3.Query{String: "SET client_encoding = 'SJIS'"}, &pgproto3.Query{String: attack})
	if !hasError(out, "0A000") {
		t.Fatalf("pipelined behind SET client_encoding: %v", out)
	}
	noPlaintextCity(t, v)
	noPlaintextCity(t, v+"$$) --")
}

// noPlaintextLastName fails if a patient's last name is stored in
// plaintext (v, or anything not ciphertext).
func noPlaintextLastName(t *testing.T, v string) {
	t.Helper()
	rows, err := phiDirect(t).Query(context.Background(), "SELECT last_name FROM patients WHERE last_name IS NOT NULL")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		if name == v || !crypto.IsCiphertext([]byte(name)) {
			t.Fatalf("a patient's last name is stored in plaintext")
		}
	}
}
