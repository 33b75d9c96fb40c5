package phi

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
)

// The scripted tests run a real proxy.Server with the PHI Engine (and the
// transparent fakeKeys) between a test client and a fake PostgreSQL that
// expects and sends exact message sequences, as pgx's pgmock does. Each
// message is compared in a one-line text form (dump), so a test reads as
// the conversation it checks.

// The catalog of testPolicy's table as the fake server reports it: OID 7,
// email (1), email_bidx (2), date_of_birth (3), photo (4, bytea), visits
// (5), id (6, not PHI).
var testCatalog = [][]string{
	{"7", "public", "patients", "1", "email", "25"},
	{"7", "public", "patients", "2", "email_bidx", "25"},
	{"7", "public", "patients", "3", "date_of_birth", "25"},
	{"7", "public", "patients", "4", "photo", "17"},
	{"7", "public", "patients", "5", "visits", "25"},
	{"7", "public", "patients", "6", "id", "23"},
}

// field describes a column of the test table by attribute number (0: an
// expression, not a table column).
func field(name string, attnum uint16, typ uint32) pgproto3.FieldDescription {
	f := pgproto3.FieldDescription{Name: []byte(name), TableAttributeNumber: attnum, DataTypeOID: typ, DataTypeSize: -1, TypeModifier: -1}
	if attnum > 0 {
		f.TableOID = 7
	}
	return f
}

// dump is the one-line text form of a protocol message.
func dump(msg any) string {
	switch m := msg.(type) {
	case *pgproto3.Query:
		return "Query " + m.String
	case *pgproto3.Parse:
		return fmt.Sprintf("Parse %q %s %v", m.Name, m.Query, m.ParameterOIDs)
	case *pgproto3.Bind:
		vals := make([]string, len(m.Parameters))
		for i, p := range m.Parameters {
			vals[i] = fmt.Sprintf("%q", p)
			if p == nil {
				vals[i] = "NULL"
			}
		}
		return fmt.Sprintf("Bind %q %q %v [%s] %v", m.DestinationPortal, m.PreparedStatement, m.ParameterFormatCodes, strings.Join(vals, " "), m.ResultFormatCodes)
	case *pgproto3.Describe:
		return fmt.Sprintf("Describe %c %q", m.ObjectType, m.Name)
	case *pgproto3.Execute:
		return fmt.Sprintf("Execute %q", m.Portal)
	case *pgproto3.Close:
		return fmt.Sprintf("Close %c %q", m.ObjectType, m.Name)
	case *pgproto3.RowDescription:
		cols := make([]string, len(m.Fields))
		for i, f := range m.Fields {
			cols[i] = fmt.Sprintf("%s:%d/%d", f.Name, f.DataTypeOID, f.Format)
		}
		return "RowDescription " + strings.Join(cols, " ")
	case *pgproto3.DataRow:
		vals := make([]string, len(m.Values))
		for i, v := range m.Values {
			vals[i] = fmt.Sprintf("%q", v)
			if v == nil {
				vals[i] = "NULL"
			}
		}
		return "DataRow " + strings.Join(vals, " ")
	case *pgproto3.ParameterDescription:
		return fmt.Sprintf("ParameterDescription %v", m.ParameterOIDs)
	case *pgproto3.ErrorResponse:
		s := fmt.Sprintf("ErrorResponse %s %s %s", m.Severity, m.Code, m.Message)
		if m.Where != "" || m.File != "" {
			s += " (where/file set)"
		}
		return s
	case *pgproto3.CommandComplete:
		return "CommandComplete " + string(m.CommandTag)
	case *pgproto3.ReadyForQuery:
		return "ReadyForQuery " + string(m.TxStatus)
	case *pgproto3.CopyData:
		return fmt.Sprintf("CopyData %q", m.Data)
	case *pgproto3.CopyInResponse:
		return fmt.Sprintf("CopyInResponse %d %v", m.OverallFormat, m.ColumnFormatCodes)
	case *pgproto3.CopyOutResponse:
		return fmt.Sprintf("CopyOutResponse %d %v", m.OverallFormat, m.ColumnFormatCodes)
	case *pgproto3.CopyFail:
		return "CopyFail " + m.Message
	}
	s := fmt.Sprintf("%T", msg)
	return s[strings.LastIndex(s, ".")+1:]
}

// fakeServer is the scripted PostgreSQL side of one session.
type fakeServer struct {
	t  *testing.T
	be *pgproto3.Backend
}

// expect receives len(want) messages and compares their dumps; a want
// ending in "…" matches any message whose dump starts with the rest.
func (f *fakeServer) expect(want ...string) {
	f.t.Helper()
	got := make([]string, 0, len(want))
	for i := range want {
		msg, err := f.be.Receive()
		if err != nil {
			f.t.Errorf("fake server: receive: %v (after %q)", err, got)
			return
		}
		d := dump(msg)
		if p, ok := strings.CutSuffix(want[i], "…"); ok && strings.HasPrefix(d, p) {
			d = want[i]
		}
		got = append(got, d)
	}
	if d := cmp.Diff(want, got); d != "" {
		f.t.Errorf("server received (-want +got):\n%s", d)
	}
}

// send sends msgs and flushes.
func (f *fakeServer) send(msgs ...pgproto3.BackendMessage) {
	for _, m := range msgs {
		f.be.Send(m)
	}
	if err := f.be.Flush(); err != nil {
		f.t.Errorf("fake server: send: %v", err)
	}
}

// catalog answers the catalog query with rows (column rows, then the
// marker rows of catalog_query.go): a simple Query when the session
// starts, the extended protocol's named statement and portal
// (proxy.Conn.Query) once it relays.
func (f *fakeServer) catalog(rows [][]string) {
	f.t.Helper()
	const query = "WITH t AS (SELECT c.oid, n.nspname…"
	msg, err := f.be.Receive()
	if err != nil {
		f.t.Errorf("fake server: receive: %v", err)
		return
	}
	extended := dump(msg) == `Close P "phiproxy_query"`
	switch {
	case extended:
		f.expect(`Close S "phiproxy_query"`, `Parse "phiproxy_query" `+query, `Bind "phiproxy_query" "phiproxy_query" [] [] []`, `Execute "phiproxy_query"`,
			`Close P "phiproxy_query"`, `Close S "phiproxy_query"`, "Sync")
		f.send(&pgproto3.CloseComplete{}, &pgproto3.CloseComplete{}, &pgproto3.ParseComplete{}, &pgproto3.BindComplete{})
	case strings.HasPrefix(dump(msg), "Query "+strings.TrimSuffix(query, "…")):
		f.send(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("oid", 0, 26)}})
	default:
		f.t.Errorf("fake server: got %q, want the catalog query", dump(msg))
		return
	}
	for _, r := range rows {
		vals := make([][]byte, len(r))
		for i, v := range r {
			vals[i] = []byte(v)
		}
		f.be.Send(&pgproto3.DataRow{Values: vals})
	}
	f.be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT")})
	if extended {
		f.be.Send(&pgproto3.CloseComplete{})
		f.be.Send(&pgproto3.CloseComplete{})
	}
	f.send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
}

// ready sends ReadyForQuery (idle).
func (f *fakeServer) ready() { f.send(&pgproto3.ReadyForQuery{TxStatus: 'I'}) }

// rows sends a RowDescription (for a simple Query), DataRows and their
// CommandComplete.
func (f *fakeServer) rows(rd *pgproto3.RowDescription, rows ...[]string) {
	if rd != nil {
		f.be.Send(rd)
	}
	for _, r := range rows {
		vals := make([][]byte, len(r))
		for i, v := range r {
			if v != "NULL" {
				vals[i] = []byte(v)
			}
		}
		f.be.Send(&pgproto3.DataRow{Values: vals})
	}
	f.send(&pgproto3.CommandComplete{CommandTag: []byte(fmt.Sprintf("SELECT %d", len(rows)))})
}

// testClient is the application side.
type testClient struct {
	t  *testing.T
	fe *pgproto3.Frontend
}

func (c *testClient) send(msgs ...pgproto3.FrontendMessage) {
	c.t.Helper()
	for _, m := range msgs {
		c.fe.Send(m)
	}
	if err := c.fe.Flush(); err != nil {
		c.t.Fatal(err)
	}
}

// expect reads up to and including ReadyForQuery and compares the dumps.
func (c *testClient) expect(want ...string) {
	c.t.Helper()
	var got []string
	for {
		msg, err := c.fe.Receive()
		if err != nil {
			c.t.Fatalf("client: receive after %q: %v", got, err)
		}
		got = append(got, dump(msg))
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
	if d := cmp.Diff(want, got); d != "" {
		c.t.Errorf("client received (-want +got):\n%s", d)
	}
}

// scripted starts a fake server running script (after the login and the
// catalog query, which it answers with testCatalog), a proxy with the PHI
// Engine for testPolicy, and a logged-in client. The test ends when both
// sides are done.
func scripted(t *testing.T, script func(f *fakeServer), hooks ...func(*session)) (*testClient, *Engine) {
	t.Helper()
	return scriptedWith(t, scriptOptions{}, script, hooks...)
}

// scriptOptions change what scripted sets up.
type scriptOptions struct {
	// policy replaces testPolicy; cfg is the Engine's Config; roles are
	// the roles the fake server reports for the login when the policy
	// has access rules; hook sees each session.
	policy string
	cfg    Config
	roles  []string
	hook   func(*session)
	// guard keeps the catalog guard (guard.go) in front of statements on
	// policy tables, which the script must then expect and answer; other
	// scripts run without it, and without rechecks.
	guard bool
	// catalog answers the first catalog query instead of testCatalog.
	catalog [][]string
	// database is the database the client names ("db" by default).
	database string
	// noCatalog: the session is not governed and runs no catalog query.
	noCatalog bool
	// recheck is Engine.recheck (an hour by default: no rechecks, and no
	// check before a refusal unless guard is set).
	recheck time.Duration
}

// scriptedWith is scripted with options.
func scriptedWith(t *testing.T, o scriptOptions, script func(f *fakeServer), hooks ...func(*session)) (*testClient, *Engine) {
	t.Helper()
	if len(hooks) > 0 {
		o.hook = hooks[0]
	}
	if o.catalog == nil {
		o.catalog = testCatalog
	}
	if o.database == "" {
		o.database = "db"
	}
	if o.policy == "" {
		o.policy = testPolicy
	}
	pol, err := policy.Parse([]byte(o.policy))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		f := &fakeServer{t: t, be: pgproto3.NewBackend(conn, conn)}
		if _, err := f.be.ReceiveStartupMessage(); err != nil {
			t.Errorf("fake server: startup: %v", err)
			return
		}
		f.be.Send(&pgproto3.AuthenticationOk{})
		f.be.Send(&pgproto3.ParameterStatus{Name: "standard_conforming_strings", Value: "on"})
		f.be.Send(&pgproto3.ParameterStatus{Name: "DateStyle", Value: "ISO, MDY"})
		f.be.Send(&pgproto3.ParameterStatus{Name: "TimeZone", Value: "UTC"})
		f.be.Send(&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{1, 2, 3, 4}})
		f.ready()
		if !o.noCatalog {
			f.catalog(o.catalog)
			if pol.HasAccessRules() {
				f.expect("Query WITH RECURSIVE m(oid) AS (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = session_user…")
				f.send(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("rolname", 0, 19)}})
				for _, r := range o.roles {
					f.be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte(r)}})
				}
				f.send(&pgproto3.CommandComplete{CommandTag: []byte(fmt.Sprintf("SELECT %d", len(o.roles)))}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
			}
		}
		script(f)
		for { // until Terminate, then EOF
			if _, err := f.be.Receive(); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})

	reg := prometheus.NewRegistry()
	eng, err := New(pol, fakeKeys{}, reg, o.cfg)
	if err != nil {
		t.Fatal(err)
	}
	eng.noGuard, eng.recheck = !o.guard, o.recheck
	if o.recheck == 0 {
		eng.recheck, eng.noRecheck = time.Hour, !o.guard
	}
	eng.onSession = o.hook
	cfg := proxy.Config{
		Listen:   proxy.ListenConfig{Address: "127.0.0.1:0", TLS: proxy.ListenTLSConfig{AllowPlaintext: true}},
		Upstream: proxy.UpstreamConfig{Address: ln.Addr().String(), TLS: proxy.UpstreamTLSConfig{Mode: proxy.TLSModeDisable}, ConnectTimeout: 2 * time.Second},
	}
	srv, err := proxy.New(cfg, slog.New(slog.DiscardHandler), reg, proxy.WithInterceptor(eng))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	conn, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	c := &testClient{t: t, fe: pgproto3.NewFrontend(conn, conn)}
	c.send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30,
		Parameters: map[string]string{"user": "alice", "database": o.database}})
	c.expect("AuthenticationOk", "ParameterStatus", "ParameterStatus", "ParameterStatus", "BackendKeyData", "ReadyForQuery I")
	t.Cleanup(func() { c.send(&pgproto3.Terminate{}) })
	return c, eng
}

// counter reads a counter's value.
func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	return testutil.ToFloat64(c)
}
