package phi

import (
	"testing"
	"time"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
)

func TestParseDateStyle(t *testing.T) {
	tests := []struct {
		in   string
		want dateStyle
		ok   bool
	}{
		{"ISO, MDY", dateStyle{styleISO, orderMDY}, true},
		{"Postgres, DMY", dateStyle{stylePostgres, orderDMY}, true},
		{"SQL, YMD", dateStyle{styleSQL, orderYMD}, true},
		{"German, DMY", dateStyle{styleGerman, orderDMY}, true},
		{"ISO,DMY", dateStyle{styleISO, orderDMY}, true},
		{"ISO", dateStyle{}, false},
		{"iso, mdy", dateStyle{}, false}, // the server reports it capitalized
		{"Euro, DMY", dateStyle{}, false},
		{"ISO, XYZ", dateStyle{}, false},
	}
	for _, tt := range tests {
		got, ok := parseDateStyle(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseDateStyle(%q) = %+v, %v; want %+v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// TestPOSIXZoneSpecs: posixFixedZone against what PostgreSQL 15.18
// accepts for SET TimeZone (22023 for the invalid ones) and the offset it
// then shows (to_char(..., 'TZH:TZM')).
func TestPOSIXZoneSpecs(t *testing.T) {
	tests := []struct {
		spec   string
		offset int // seconds east of UTC, for a fixed zone
		fixed  bool
		dst    bool // a valid spec with daylight saving
	}{
		{"UTC+3", -3 * 3600, true, false},
		{"<-03>+03", -3 * 3600, true, false},
		{"<+05:30>-05:30", 5*3600 + 30*60, true, false},
		// Read in a value (TestReadPOSIXZonePG15); SET TimeZone refuses it,
		// so the server never reports it.
		{"ABC+3:30:15", -(3*3600 + 30*60 + 15), true, false},
		{"EST5EDT,M3.2.0,M11.1.0", 0, false, true},
		{"abc+3def", 0, false, true},
		{"abc+3def,M3.2.0,M11.1.0", 0, false, true},
		{"abc+3def,J60/2,300", 0, false, true},
		{"abc+3def-2,60/-1:30,J300", 0, false, true},
		{"abc+3def,M3.2.0/2,M11.1.0/-1:30:15", 0, false, true},
		{"<+0330>-3:30<+0430>,J79/24,J263/24", 0, false, true},
		{"abc+3def,M13.1.0,M11.1.0", 0, false, false},
		{"abc+3def,M3.2.0", 0, false, false},
		{"abc+168", 0, false, false},
		{"abc-3:60", 0, false, false},
		{"abc+3def+", 0, false, false},
		{"abc+3def,J0,J300", 0, false, false},
		{"abc+3def,M3.6.0,M11.1.0", 0, false, false},
		{"abc+3def,M3.2.7,M11.1.0", 0, false, false},
		{"abc+3def,366,J300", 0, false, false},
		{"abc+3def,M3.2.0,M11.1.0/x", 0, false, false},
		{"abc+3def,M3,M11.1.0", 0, false, false},
		{"abc+3def,M3.2,M11.1.0", 0, false, false},
		{"abc+3def,M3.2.0,M11.1.0x", 0, false, false},
		{"<abc", 0, false, false},
		{"abc", 0, false, false},
	}
	for _, tt := range tests {
		loc, dst := posixFixedZone(tt.spec)
		if (loc != nil) != tt.fixed || dst != tt.dst {
			t.Errorf("posixFixedZone(%q) = %v, %v; want fixed %v, dst %v", tt.spec, loc, dst, tt.fixed, tt.dst)
			continue
		}
		if loc != nil {
			if _, off := time.Date(2020, 7, 1, 0, 0, 0, 0, loc).Zone(); off != tt.offset {
				t.Errorf("posixFixedZone(%q) offset %d, want %d", tt.spec, off, tt.offset)
			}
		}
	}
}

// TestSessionZone: the TimeZone the server reports, resolved; what the
// proxy cannot compute makes timestamptz values that need it refused.
func TestSessionZone(t *testing.T) {
	at := time.Date(2020, 7, 1, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name   string
		offset int
	}{
		{"Europe/Paris", 2 * 3600},
		{"europe/paris", 2 * 3600}, // PostgreSQL finds zone files case-insensitively
		{"UTC+3", -3 * 3600},
		{"<+05:30>-05:30", 5*3600 + 30*60},
	} {
		loc := sessionZone(tt.name)
		if loc == nil {
			t.Errorf("sessionZone(%q) = nil", tt.name)
			continue
		}
		if _, off := at.In(loc).Zone(); off != tt.offset {
			t.Errorf("sessionZone(%q) offset %d, want %d", tt.name, off, tt.offset)
		}
	}
	for _, name := range []string{"", "abc+3def,M3.2.0,M11.1.0", "No/Such_Zone"} {
		if loc := sessionZone(name); loc != nil {
			t.Errorf("sessionZone(%q) = %v, want nil", name, loc)
		}
	}
	c := testCodec("ISO, MDY", "abc+3def,M3.2.0,M11.1.0")
	if _, err := c.canonical(nil, policy.TypeTimestamptz, formatText, []byte("2020-07-01 10:00")); proxy.Classify(err).Code != "0A000" {
		t.Errorf("timestamptz without offset under a DST POSIX TimeZone: %v, want 0A000", err)
	}
	if got, err := c.canonical(nil, policy.TypeTimestamptz, formatText, []byte("2020-07-01 10:00+02")); err != nil || string(got) != "2020-07-01 08:00:00Z" {
		t.Errorf("timestamptz with offset under a DST POSIX TimeZone: %q, %v", got, err)
	}
	if _, err := c.present(nil, policy.TypeTimestamptz, formatText, []byte("2020-07-01 08:00:00Z")); proxy.Classify(err).Code != "0A000" {
		t.Errorf("timestamptz output under a DST POSIX TimeZone: %v, want 0A000", err)
	}
}

// TestMovesSettings: the statements after which DateStyle or TimeZone
// may have changed.
func TestMovesSettings(t *testing.T) {
	tests := []struct {
		sql  string
		want bool
	}{
		{"SET DateStyle = 'SQL, DMY'", true},
		{"select 1; reset all", true},
		{"  set local timezone = 'UTC'", true},
		{"DISCARD ALL", true},
		{"insert into t values (1); COMMIT", true},
		{"rollback", true},
		{"abort", true},
		{"END", true},
		{"PREPARE TRANSACTION 'x'", true},
		{"DO $$ begin perform 1; end $$", true},
		{"call p()", true},
		{"select set_config('TimeZone', 'UTC', false)", true},
		{"SELECT pg_reload_conf()", true},
		{"/* a comment */ SET x = 1", true},
		{"/* nested /* comment */ still */ set x = 1", true},
		{"-- a comment\nset x = 1", true},
		{"SELECT 1", false},
		{"select settings from t", false},
		{"select 1 as set", false},
		{"select x -- set\n from t", false},
		{"select /* set */ 1", false},
		{"/* unterminated set", false},
		{"with s as (select 1) select * from s", false},
		{"select _set, set$x from t", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := movesSettings(tt.sql); got != tt.want {
			t.Errorf("movesSettings(%q) = %v, want %v", tt.sql, got, tt.want)
		}
	}
}
