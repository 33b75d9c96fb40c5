package phi

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Time zones: the TimeZone setting, zone names and POSIX specs, abbreviations.

// sessionZone resolves the TimeZone the server reports: a zone of the tz
// database, or a POSIX-style fixed offset such as "<-05>+05" or "UTC+3"
// (what SET TIME ZONE -5 and the like report). nil: unknown.
func sessionZone(name string) *time.Location {
	if name == "" {
		return nil
	}
	if loc, err := time.LoadLocation(name); err == nil {
		return loc
	}
	if loc := zoneFile(name); loc != nil {
		return loc
	}
	loc, _ := posixFixedZone(name)
	return loc
}

// lookupZone is pg_tzset for a zone named in a date/time value (already
// lower-cased): a zone of the tz database, found case-insensitively, or a
// POSIX spec with a fixed offset. (nil, nil): PostgreSQL would not know it
// either.
func lookupZone(name string) (*time.Location, error) {
	if loc := zoneFile(name); loc != nil {
		return loc, nil
	}
	loc, dst := posixFixedZone(strings.ToUpper(name))
	switch {
	case loc != nil:
		return loc, nil
	case dst:
		return nil, errPosixDST
	}
	if zoneIndex() == nil {
		return nil, &dtRefusal{msg: "time zone names in date/time values need the tz database, which the proxy's host lacks",
			hint: "Give the offset (+05:30) instead of a zone name."}
	}
	return nil, nil
}

// errPosixDST refuses a POSIX zone with daylight-saving rules where its
// offset matters.
var errPosixDST = &dtRefusal{msg: "POSIX time zone specifications with daylight-saving rules in date/time values are refused by the proxy",
	hint: "Give the offset (+05:30) or a zone name such as 'Europe/Paris'."}

// zoneFile loads the zone of the tz database whose name matches name
// case-insensitively, as PostgreSQL finds zone files.
func zoneFile(name string) *time.Location {
	idx := zoneIndex()
	if idx == nil {
		return nil
	}
	canonical, ok := idx[strings.ToLower(name)]
	if !ok {
		return nil
	}
	loc, err := time.LoadLocation(canonical)
	if err != nil {
		return nil
	}
	return loc
}

var zoneIndexOnce = sync.OnceValue(buildZoneIndex)

func zoneIndex() map[string]string { return zoneIndexOnce() }

// buildZoneIndex lists the tz database the Go runtime reads (the same
// files a PostgreSQL built --with-system-tzdata reads), by lower-cased name.
func buildZoneIndex() map[string]string {
	dirs := []string{"/usr/share/zoneinfo", "/usr/share/lib/zoneinfo", "/usr/lib/locale/TZ", "/etc/zoneinfo"}
	if z := os.Getenv("ZONEINFO"); z != "" {
		dirs = append([]string{z}, dirs...)
	}
	for _, dir := range dirs {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			continue
		}
		idx := map[string]string{}
		filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			rel, err := filepath.Rel(dir, path)
			if err != nil || strings.Contains(rel, ".") {
				return nil // zone.tab, tzdata.zi and the like
			}
			idx[strings.ToLower(rel)] = rel
			return nil
		})
		if len(idx) > 0 {
			return idx
		}
	}
	return nil
}

// posixFixedZone reads a POSIX TZ spec as PostgreSQL's tzparse does
// (src/timezone/localtime.c): std offset [dst [offset] [,rule,rule]], where
// a name is <...> or a run of characters other than digits, ',', '+' and
// '-', and an offset is [+-]hh[:mm[:ss]] west of UTC. A spec without a
// daylight-saving part is a fixed zone; dst reports a valid spec with one,
// whose transitions the proxy does not compute.
func posixFixedZone(spec string) (loc *time.Location, dst bool) {
	std, rest, ok := posixName(spec)
	if !ok || std == "" {
		return nil, false
	}
	sign, rest := posixSign(rest)
	secs, rest, ok := posixSecs(rest, 167)
	if !ok {
		return nil, false
	}
	if rest == "" {
		return time.FixedZone(std, -sign*secs), false
	}
	dstName, rest, ok := posixName(rest)
	if !ok || dstName == "" {
		return nil, false
	}
	if rest != "" && rest[0] != ',' && rest[0] != ';' {
		_, rest = posixSign(rest)
		if _, rest, ok = posixSecs(rest, 167); !ok {
			return nil, false
		}
	}
	if rest == "" {
		return nil, true // the default rules (",M3.2.0,M11.1.0")
	}
	if rest[0] != ',' && rest[0] != ';' {
		return nil, false
	}
	if rest, ok = posixRule(rest[1:]); !ok || rest == "" || rest[0] != ',' {
		return nil, false
	}
	if rest, ok = posixRule(rest[1:]); !ok || rest != "" {
		return nil, false
	}
	return nil, true
}

// posixName is getzname or getqzname.
func posixName(s string) (string, string, bool) {
	if strings.HasPrefix(s, "<") {
		end := strings.IndexByte(s, '>')
		if end < 0 {
			return "", s, false
		}
		return s[1:end], s[end+1:], true
	}
	i := 0
	for i < len(s) && !isDigit(s[i]) && s[i] != ',' && s[i] != '-' && s[i] != '+' {
		i++
	}
	return s[:i], s[i:], true
}

func posixSign(s string) (int, string) {
	if s != "" && s[0] == '-' {
		return -1, s[1:]
	}
	if s != "" && s[0] == '+' {
		return 1, s[1:]
	}
	return 1, s
}

// posixNum is getnum: digits up to max.
func posixNum(s string, min, max int) (int, string, bool) {
	if s == "" || !isDigit(s[0]) {
		return 0, s, false
	}
	n := 0
	i := 0
	for i < len(s) && isDigit(s[i]) {
		n = n*10 + int(s[i]-'0')
		if n > max {
			return 0, s, false
		}
		i++
	}
	if n < min {
		return 0, s, false
	}
	return n, s[i:], true
}

// posixSecs is getsecs: hh[:mm[:ss]].
func posixSecs(s string, maxHours int) (int, string, bool) {
	h, s, ok := posixNum(s, 0, maxHours)
	if !ok {
		return 0, s, false
	}
	secs := h * 3600
	if strings.HasPrefix(s, ":") {
		var m int
		if m, s, ok = posixNum(s[1:], 0, 59); !ok {
			return 0, s, false
		}
		secs += m * 60
		if strings.HasPrefix(s, ":") {
			var sec int
			if sec, s, ok = posixNum(s[1:], 0, 60); !ok {
				return 0, s, false
			}
			secs += sec
		}
	}
	return secs, s, true
}

// posixRule is getrule: Jn, n or Mm.w.d, then an optional /time.
func posixRule(s string) (string, bool) {
	var ok bool
	switch {
	case strings.HasPrefix(s, "J"):
		_, s, ok = posixNum(s[1:], 1, 365)
	case strings.HasPrefix(s, "M"):
		if _, s, ok = posixNum(s[1:], 1, 12); !ok || !strings.HasPrefix(s, ".") {
			return s, false
		}
		if _, s, ok = posixNum(s[1:], 1, 5); !ok || !strings.HasPrefix(s, ".") {
			return s, false
		}
		_, s, ok = posixNum(s[1:], 0, 6)
	default:
		_, s, ok = posixNum(s, 0, 365)
	}
	if !ok {
		return s, false
	}
	if strings.HasPrefix(s, "/") {
		_, s = posixSign(s[1:])
		if _, s, ok = posixSecs(s, 167); !ok {
			return s, false
		}
	}
	return s, true
}

// tkDyntz is a dynamic zone abbreviation (its offset depends on the date).
const tkDyntz = 7

// zoneAbbrevs are the abbreviations of PostgreSQL's Default
// timezone_abbreviations set (share/timezonesets/Default), lower-cased,
// with their kind: fixed (TZ), daylight-saving (DTZ) or dynamic (DYNTZ).
// The proxy reads only the zero-offset ones (UTC, GMT, Z, ...), whose
// meaning no setting changes; the others are refused, since the server's
// timezone_abbreviations (not reported to clients) decides what they mean.
var zoneAbbrevs = map[string]int{
	"eat": tkTz, "sast": tkTz, "wat": tkTz, "act": tkTz, "akdt": tkDtz, "akst": tkTz, "art": tkDyntz,
	"arst": tkDyntz, "bot": tkTz, "bra": tkTz, "brst": tkDtz, "brt": tkTz, "cot": tkTz, "cdt": tkDtz,
	"clst": tkDtz, "clt": tkDyntz, "cst": tkTz, "edt": tkDtz, "egst": tkDtz, "egt": tkTz, "est": tkTz,
	"fnt": tkTz, "fnst": tkDtz, "gft": tkTz, "gyt": tkDyntz, "mdt": tkDtz, "mst": tkTz, "ndt": tkDtz,
	"nft": tkTz, "nst": tkTz, "pet": tkTz, "pdt": tkDtz, "pmdt": tkDtz, "pmst": tkTz, "pst": tkTz,
	"pyst": tkDtz, "pyt": tkDyntz, "uyst": tkDtz, "uyt": tkTz, "vet": tkDyntz, "wgst": tkDtz,
	"wgt": tkTz, "davt": tkDyntz, "ddut": tkTz, "mawt": tkDyntz, "aft": tkTz, "almt": tkTz,
	"almst": tkDtz, "amst": tkDyntz, "amt": tkTz, "anast": tkDyntz, "anat": tkDyntz, "azst": tkDyntz,
	"azt": tkDyntz, "bdt": tkTz, "bnt": tkTz, "bort": tkTz, "btt": tkTz, "cct": tkTz, "gest": tkDyntz,
	"get": tkDyntz, "hkt": tkTz, "ict": tkTz, "idt": tkDtz, "irkst": tkDyntz, "irkt": tkDyntz,
	"irt": tkTz, "ist": tkTz, "jayt": tkTz, "jst": tkTz, "kdt": tkDtz, "kgst": tkDtz, "kgt": tkDyntz,
	"krast": tkDyntz, "krat": tkDyntz, "kst": tkTz, "lkt": tkDyntz, "magst": tkDyntz, "magt": tkDyntz,
	"mmt": tkTz, "myt": tkTz, "novst": tkDyntz, "novt": tkDyntz, "npt": tkTz, "omsst": tkDyntz,
	"omst": tkDyntz, "petst": tkDyntz, "pett": tkDyntz, "pht": tkTz, "pkt": tkTz, "pkst": tkDtz,
	"sgt": tkDyntz, "tjt": tkTz, "tmt": tkDyntz, "ulast": tkDtz, "ulat": tkDyntz, "uzst": tkDtz,
	"uzt": tkTz, "vlast": tkDyntz, "vlat": tkDyntz, "xjt": tkTz, "yakst": tkDyntz, "yakt": tkDyntz,
	"yekst": tkDtz, "yekt": tkDyntz, "adt": tkDtz, "ast": tkTz, "azost": tkDtz, "azot": tkTz,
	"fkst": tkDyntz, "fkt": tkDyntz, "acsst": tkDtz, "acdt": tkDtz, "acst": tkTz, "acwst": tkTz,
	"aesst": tkDtz, "aedt": tkDtz, "aest": tkTz, "awsst": tkDtz, "awst": tkTz, "cadt": tkDtz,
	"cast": tkTz, "lhdt": tkDyntz, "lhst": tkTz, "ligt": tkTz, "nzt": tkTz, "sadt": tkDtz,
	"wadt": tkDtz, "wast": tkTz, "wdt": tkDtz, "gmt": tkTz, "uct": tkTz, "ut": tkTz, "utc": tkTz,
	"z": tkTz, "zulu": tkTz, "bst": tkDtz, "bdst": tkDtz, "cest": tkDtz, "cet": tkTz, "cetdst": tkDtz,
	"eest": tkDtz, "eet": tkTz, "eetdst": tkDtz, "fet": tkTz, "mest": tkDtz, "mesz": tkDtz,
	"met": tkTz, "metdst": tkDtz, "mez": tkTz, "msd": tkDtz, "msk": tkDyntz, "volt": tkDyntz,
	"wet": tkTz, "wetdst": tkDtz, "cxt": tkTz, "iot": tkDyntz, "mut": tkTz, "must": tkDtz,
	"mvt": tkTz, "ret": tkTz, "sct": tkTz, "tft": tkTz, "chadt": tkDtz, "chast": tkTz, "chut": tkTz,
	"ckt": tkDyntz, "easst": tkDyntz, "east": tkDyntz, "fjst": tkDtz, "fjt": tkTz, "galt": tkTz,
	"gamt": tkTz, "gilt": tkTz, "hst": tkTz, "kost": tkDyntz, "lint": tkDyntz, "mart": tkTz,
	"mht": tkTz, "mpt": tkTz, "nut": tkDyntz, "nzdt": tkDtz, "nzst": tkTz, "pgt": tkTz, "pont": tkTz,
	"pwt": tkTz, "taht": tkTz, "tkt": tkDyntz, "tot": tkTz, "trut": tkTz, "tvt": tkTz, "vut": tkTz,
	"wakt": tkTz, "wft": tkTz, "yapt": tkTz,
}

// utcAbbrevs are the abbreviations with offset 0 in every set PostgreSQL
// ships, also zone names when no set lists them.
var utcAbbrevs = map[string]bool{"gmt": true, "uct": true, "ut": true, "utc": true, "z": true, "zulu": true}

// decodeTimezoneAbbrev is DecodeTimezoneAbbrev: the kind and offset (east
// of UTC, as the table stores it) of a zone abbreviation, or tkUnknown;
// err is set for an abbreviation the proxy refuses to read.
func decodeTimezoneAbbrev(f string) (int, int, error) {
	typ, ok := zoneAbbrevs[f]
	if !ok {
		return tkUnknown, 0, nil
	}
	if utcAbbrevs[f] {
		return typ, 0, nil
	}
	return typ, 0, &dtRefusal{
		msg:  "time zone abbreviations in timestamptz values are refused by the proxy: their meaning depends on the server's timezone_abbreviations setting",
		hint: "Give the offset (+05:30) or a zone name such as 'America/New_York'.",
	}
}
