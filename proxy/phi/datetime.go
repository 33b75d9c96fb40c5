package phi

import (
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"

	"github.com/novamind/phiproxy/policy"
)

// This file reads dates and timestamps exactly as PostgreSQL 15 does: a
// port of ParseDateTime, DecodeDateTime and their helpers from
// src/backend/utils/adt/datetime.c, kept close to the C so that the two
// can be compared line by line. What the server would read under a
// setting (DateStyle's field order, the session TimeZone) is read under
// the setting it last reported, and only when the input consults it; what
// the proxy cannot know (the transaction's time for 'now' and 'today',
// the server's timezone_abbreviations for 'EST') is refused. The output
// side is EncodeDateOnly and EncodeDateTime.

// Field types of ParseDateTime (datetime.h).
const (
	dtkNumber  = 0
	dtkString  = 1
	dtkDate    = 2
	dtkTime    = 3
	dtkTz      = 4
	dtkSpecial = 6

	dtkEarly     = 9
	dtkLate      = 10
	dtkEpoch     = 11
	dtkNow       = 12
	dtkYesterday = 13
	dtkToday     = 14
	dtkTomorrow  = 15
	dtkZulu      = 16

	dtkSecond  = 18
	dtkMinute  = 19
	dtkHour    = 20
	dtkDay     = 21
	dtkMonth   = 23
	dtkYear    = 25
	dtkJulian  = 31
	dtkDow     = 32
	dtkDoy     = 33
	dtkIsoyear = 36
	dtkIsodow  = 37
)

// Token types of datetktbl (datetime.h), also the bits of field masks.
const (
	tkReserv      = 0
	tkMonth       = 1
	tkYear        = 2
	tkDay         = 3
	tkTz          = 5
	tkDtz         = 6
	tkIgnore      = 8
	tkAmpm        = 9
	tkHour        = 10
	tkMinute      = 11
	tkSecond      = 12
	tkMillisecond = 13
	tkMicrosecond = 14
	tkDoy         = 15
	tkDow         = 16
	tkUnits       = 17
	tkAdbc        = 18
	tkIsotime     = 23
	tkDtzmod      = 28
	tkUnknown     = 31
)

func dtkM(t int) int { return 1 << t }

var (
	dtkAllSecsM = dtkM(tkSecond) | dtkM(tkMillisecond) | dtkM(tkMicrosecond)
	dtkDateM    = dtkM(tkYear) | dtkM(tkMonth) | dtkM(tkDay)
	dtkTimeM    = dtkM(tkHour) | dtkM(tkMinute) | dtkAllSecsM
)

const (
	am   = 0
	pm   = 1
	hr24 = 2
	bc   = 1

	maxDateLen    = 128
	maxDateFields = 25
	maxTzDispHour = 15

	secsPerDay     = 86400
	usecsPerDay    = int64(86400000000)
	usecsPerHour   = int64(3600000000)
	usecsPerMinute = int64(60000000)
	usecsPerSec    = int64(1000000)

	unixEpochJDate     = 2440588
	postgresEpochJDate = 2451545

	julianMinYear  = -4713
	julianMinMonth = 11
	julianMaxYear  = 5874898
	julianMaxMonth = 6

	dateEndJulian      = 2147483494
	timestampEndJulian = 109203528
	minTimestamp       = int64(-211813488000000000)
	endTimestamp       = int64(9223371331200000000)

	dateNoBegin = math.MinInt32
	dateNoEnd   = math.MaxInt32
	tsNoBegin   = math.MinInt64
	tsNoEnd     = math.MaxInt64
)

// DateTime parse errors (datetime.h).
const (
	dterrBadFormat       = -1
	dterrFieldOverflow   = -2
	dterrMDFieldOverflow = -3
	dterrTZDispOverflow  = -5
)

type dtToken struct{ typ, val int }

// datetktbl of datetime.c: the keywords of date/time input.
var datetktbl = map[string]dtToken{
	"-infinity": {tkReserv, dtkEarly}, "ad": {tkAdbc, 0}, "allballs": {tkReserv, dtkZulu},
	"am": {tkAmpm, am}, "apr": {tkMonth, 4}, "april": {tkMonth, 4}, "at": {tkIgnore, 0},
	"aug": {tkMonth, 8}, "august": {tkMonth, 8}, "bc": {tkAdbc, bc}, "d": {tkUnits, dtkDay},
	"dec": {tkMonth, 12}, "december": {tkMonth, 12}, "dow": {tkUnits, dtkDow}, "doy": {tkUnits, dtkDoy},
	"dst": {tkDtzmod, 3600}, "epoch": {tkReserv, dtkEpoch}, "feb": {tkMonth, 2}, "february": {tkMonth, 2},
	"fri": {tkDow, 5}, "friday": {tkDow, 5}, "h": {tkUnits, dtkHour}, "infinity": {tkReserv, dtkLate},
	"isodow": {tkUnits, dtkIsodow}, "isoyear": {tkUnits, dtkIsoyear}, "j": {tkUnits, dtkJulian},
	"jan": {tkMonth, 1}, "january": {tkMonth, 1}, "jd": {tkUnits, dtkJulian}, "jul": {tkMonth, 7},
	"julian": {tkUnits, dtkJulian}, "july": {tkMonth, 7}, "jun": {tkMonth, 6}, "june": {tkMonth, 6},
	"m": {tkUnits, dtkMonth}, "mar": {tkMonth, 3}, "march": {tkMonth, 3}, "may": {tkMonth, 5},
	"mm": {tkUnits, dtkMinute}, "mon": {tkDow, 1}, "monday": {tkDow, 1}, "nov": {tkMonth, 11},
	"november": {tkMonth, 11}, "now": {tkReserv, dtkNow}, "oct": {tkMonth, 10}, "october": {tkMonth, 10},
	"on": {tkIgnore, 0}, "pm": {tkAmpm, pm}, "s": {tkUnits, dtkSecond}, "sat": {tkDow, 6},
	"saturday": {tkDow, 6}, "sep": {tkMonth, 9}, "sept": {tkMonth, 9}, "september": {tkMonth, 9},
	"sun": {tkDow, 0}, "sunday": {tkDow, 0}, "t": {tkIsotime, dtkTime}, "thu": {tkDow, 4},
	"thur": {tkDow, 4}, "thurs": {tkDow, 4}, "thursday": {tkDow, 4}, "today": {tkReserv, dtkToday},
	"tomorrow": {tkReserv, dtkTomorrow}, "tue": {tkDow, 2}, "tues": {tkDow, 2}, "tuesday": {tkDow, 2},
	"wed": {tkDow, 3}, "wednesday": {tkDow, 3}, "weds": {tkDow, 3}, "y": {tkUnits, dtkYear},
	"yesterday": {tkReserv, dtkYesterday},
}

// pgTm is struct pg_tm as the decoder fills it (tm_year is the
// astronomical year: 0 is 1 BC).
type pgTm struct {
	year, mon, mday, hour, min, sec, yday, wday, isdst int
}

// dtEnv is what decoding may consult, lazily: the session's settings
// (DateStyle's field order, TimeZone), or why they cannot be known now.
type dtEnv struct {
	settings func() (*sessionSettings, error)
	// err is the first setting decoding needed and could not have; the
	// decoder then unwinds with dterrSettings.
	err error
}

// dterrSettings unwinds the decoder when a setting it needs is unknown.
const dterrSettings = -100

// order is DateOrder, when known.
func (e *dtEnv) order() (dateOrder, bool) {
	st, err := e.current()
	if err == nil && !st.dateStyleOK {
		err = errDateStyleUnknown
	}
	if err != nil {
		if e.err == nil {
			e.err = err
		}
		return 0, false
	}
	return st.dateStyle.order, true
}

// zone is the session's time zone, when known.
func (e *dtEnv) zone() (*time.Location, error) {
	st, err := e.current()
	if err == nil && st.zone == nil {
		err = errTimeZoneUnknown
	}
	if err != nil {
		return nil, err
	}
	return st.zone, nil
}

func (e *dtEnv) current() (*sessionSettings, error) {
	if e.settings == nil {
		return nil, errSettingsMoved
	}
	st, err := e.settings()
	if err == nil && st == nil {
		err = errDateStyleUnknown
	}
	return st, err
}

// decoded is DecodeDateTime's result.
type decoded struct {
	dtype int
	tm    pgTm
	fsec  int32
	// tz is the offset in seconds west of UTC when tzSet; needSession: no
	// zone in the input (the session's applies).
	tz          int
	tzSet       bool
	needSession bool
	// zoneErr is a zone the proxy cannot resolve (an abbreviation whose
	// meaning depends on the server's settings): reported only when the
	// caller needs the offset.
	zoneErr error
}

// dtError turns a DTERR code into PostgreSQL's error for the type.
func dtError(code int, t policy.LogicalType, typeName string) error {
	switch code {
	case dterrFieldOverflow:
		return &ValueError{Type: t, Code: pgerrcode.DatetimeFieldOverflow, Msg: "date/time field value out of range"}
	case dterrMDFieldOverflow:
		return &ValueError{Type: t, Code: pgerrcode.DatetimeFieldOverflow, Msg: "date/time field value out of range",
			Hnt: `Perhaps you need a different "datestyle" setting.`}
	case dterrTZDispOverflow:
		return &ValueError{Type: t, Code: pgerrcode.InvalidTimeZoneDisplacementValue, Msg: "time zone displacement out of range"}
	}
	return &ValueError{Type: t, Code: pgerrcode.InvalidDatetimeFormat, Msg: "invalid input syntax for type " + typeName}
}

// dtRefusal is an input the proxy will not read because its meaning
// depends on something it cannot know.
type dtRefusal struct{ msg, hint string }

func (r *dtRefusal) Error() string { return r.msg }

// parseDateTime is ParseDateTime: the input split into lower-cased
// fields. bufLen is the size of the caller's work buffer.
func parseDateTime(s string, bufLen int) (fields []string, ftypes []int, code int) {
	var buf []byte
	used := 0 // bytes of the work buffer, NUL terminators included
	appendChar := func(c byte) bool {
		if used+1 >= bufLen {
			return false
		}
		buf = append(buf, c)
		used++
		return true
	}
	i := 0
	for i < len(s) {
		c := s[i]
		if isSpace(c) {
			i++
			continue
		}
		if len(fields) >= maxDateFields {
			return nil, nil, dterrBadFormat
		}
		buf = buf[:0]
		var ft int
		switch {
		case isDigit(c):
			if !appendChar(c) {
				return nil, nil, dterrBadFormat
			}
			i++
			for i < len(s) && isDigit(s[i]) {
				if !appendChar(s[i]) {
					return nil, nil, dterrBadFormat
				}
				i++
			}
			switch {
			case i < len(s) && s[i] == ':':
				ft = dtkTime
				if !appendChar(s[i]) {
					return nil, nil, dterrBadFormat
				}
				i++
				for i < len(s) && (isDigit(s[i]) || s[i] == ':' || s[i] == '.') {
					if !appendChar(s[i]) {
						return nil, nil, dterrBadFormat
					}
					i++
				}
			case i < len(s) && (s[i] == '-' || s[i] == '/' || s[i] == '.'):
				delim := s[i]
				if !appendChar(s[i]) {
					return nil, nil, dterrBadFormat
				}
				i++
				if i < len(s) && isDigit(s[i]) {
					ft = dtkDate
					if delim == '.' {
						ft = dtkNumber
					}
					for i < len(s) && isDigit(s[i]) {
						if !appendChar(s[i]) {
							return nil, nil, dterrBadFormat
						}
						i++
					}
					if i < len(s) && s[i] == delim {
						ft = dtkDate
						if !appendChar(s[i]) {
							return nil, nil, dterrBadFormat
						}
						i++
						for i < len(s) && (isDigit(s[i]) || s[i] == delim) {
							if !appendChar(s[i]) {
								return nil, nil, dterrBadFormat
							}
							i++
						}
					}
				} else {
					ft = dtkDate
					for i < len(s) && (isAlnum(s[i]) || s[i] == delim) {
						if !appendChar(lower(s[i])) {
							return nil, nil, dterrBadFormat
						}
						i++
					}
				}
			default:
				ft = dtkNumber
			}
		case c == '.':
			if !appendChar(c) {
				return nil, nil, dterrBadFormat
			}
			i++
			for i < len(s) && isDigit(s[i]) {
				if !appendChar(s[i]) {
					return nil, nil, dterrBadFormat
				}
				i++
			}
			ft = dtkNumber
		case isAlpha(c):
			ft = dtkString
			if !appendChar(lower(c)) {
				return nil, nil, dterrBadFormat
			}
			i++
			for i < len(s) && isAlpha(s[i]) {
				if !appendChar(lower(s[i])) {
					return nil, nil, dterrBadFormat
				}
				i++
			}
			isDate := false
			if i < len(s) && (s[i] == '-' || s[i] == '/' || s[i] == '.') {
				isDate = true
			} else if i < len(s) && (s[i] == '+' || isDigit(s[i])) {
				if _, ok := datetktbl[string(buf)]; !ok {
					isDate = true
				}
			}
			if isDate {
				ft = dtkDate
				for {
					if !appendChar(lower(s[i])) {
						return nil, nil, dterrBadFormat
					}
					i++
					if i >= len(s) || !(s[i] == '+' || s[i] == '-' || s[i] == '/' || s[i] == '_' ||
						s[i] == '.' || s[i] == ':' || isAlnum(s[i])) {
						break
					}
				}
			}
		case c == '+' || c == '-':
			if !appendChar(c) {
				return nil, nil, dterrBadFormat
			}
			i++
			for i < len(s) && isSpace(s[i]) {
				i++
			}
			switch {
			case i < len(s) && isDigit(s[i]):
				ft = dtkTz
				if !appendChar(s[i]) {
					return nil, nil, dterrBadFormat
				}
				i++
				for i < len(s) && (isDigit(s[i]) || s[i] == ':' || s[i] == '.' || s[i] == '-') {
					if !appendChar(s[i]) {
						return nil, nil, dterrBadFormat
					}
					i++
				}
			case i < len(s) && isAlpha(s[i]):
				ft = dtkSpecial
				if !appendChar(lower(s[i])) {
					return nil, nil, dterrBadFormat
				}
				i++
				for i < len(s) && isAlpha(s[i]) {
					if !appendChar(lower(s[i])) {
						return nil, nil, dterrBadFormat
					}
					i++
				}
			default:
				return nil, nil, dterrBadFormat
			}
		case isPunct(c):
			i++
			continue
		default:
			return nil, nil, dterrBadFormat
		}
		used++ // the field's NUL terminator
		fields = append(fields, string(buf))
		ftypes = append(ftypes, ft)
	}
	return fields, ftypes, 0
}

func isAlpha(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isAlnum(c byte) bool { return isAlpha(c) || isDigit(c) }
func isPunct(c byte) bool {
	return c > ' ' && c < 0x7f && !isAlnum(c)
}
func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// cStrtoint is strtoint(s, &end, 10) from the start of s: the value, the
// rest, and whether it overflowed int32 (ERANGE).
func cStrtoint(s string) (int, string, bool) {
	v, end := strtol(s, 0)
	if end == 0 {
		return 0, s, false
	}
	if v != int64(int32(v)) {
		return int(int32(v)), s[end:], true
	}
	return int(v), s[end:], false
}

// cAtoi is atoi: strtol truncated to int.
func cAtoi(s string) int {
	v, _ := strtol(s, 0)
	return int(int32(v))
}

// cStrtodFraction is strtod over a string of digits and dots starting
// with '.': the value of the longest number prefix and the rest.
func cStrtodFraction(s string) (float64, string) {
	i := 1
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	if i == 1 {
		return 0, s // "." alone is no number
	}
	f, _ := strconv.ParseFloat("0"+s[:i], 64)
	return f, s[i:]
}

// parseFraction is ParseFraction.
func parseFraction(cp string) (float64, int) {
	if cp == "." {
		return 0, 0
	}
	f, rest := cStrtodFraction(cp)
	if rest != "" {
		return 0, dterrBadFormat
	}
	return f, 0
}

// parseFractionalSecond is ParseFractionalSecond.
func parseFractionalSecond(cp string) (int32, int) {
	f, code := parseFraction(cp)
	if code != 0 {
		return 0, code
	}
	return int32(math.RoundToEven(f * 1000000)), 0
}

// decodeDateTime is DecodeDateTime (with a non-NULL tzp).
func decodeDateTime(fields []string, ftypes []int, env *dtEnv) (decoded, int, error) {
	var d decoded
	tm := &d.tm
	fmask, tmask := 0, 0
	ptype := 0
	mer := hr24
	haveTextMonth, isjulian, is2digits, isBC := false, false, false, false
	var namedTz *time.Location
	namedZone := false // a zone name or POSIX spec (namedTz nil: not computable)
	d.dtype = dtkDate
	tm.isdst = -1
	nf := len(fields)
	for i := 0; i < nf; i++ {
		f := fields[i]
		switch ftypes[i] {
		case dtkDate:
			if ptype == dtkJulian {
				val, cp, over := cStrtoint(f)
				if over || val < 0 {
					return d, dterrFieldOverflow, nil
				}
				tm.year, tm.mon, tm.mday = j2date(val)
				isjulian = true
				tz, code := decodeTimezone(cp)
				if code != 0 {
					return d, code, nil
				}
				d.tz, d.tzSet = tz, true
				tmask = dtkDateM | dtkTimeM | dtkM(tkTz)
				ptype = 0
			} else if ptype != 0 || fmask&(dtkM(tkMonth)|dtkM(tkDay)) == dtkM(tkMonth)|dtkM(tkDay) {
				if isDigit(f[0]) || ptype != 0 {
					if ptype != 0 {
						if ptype != dtkTime {
							return d, dterrBadFormat, nil
						}
						ptype = 0
					}
					if fmask&dtkTimeM == dtkTimeM {
						return d, dterrBadFormat, nil
					}
					k := strings.IndexByte(f, '-')
					if k < 0 {
						return d, dterrBadFormat, nil
					}
					tz, code := decodeTimezone(f[k:])
					if code != 0 {
						return d, code, nil
					}
					d.tz, d.tzSet = tz, true
					r, code := decodeNumberField(f[:k], fmask, tm, &d.fsec, &is2digits)
					if code < 0 {
						return d, code, nil
					}
					tmask = r | dtkM(tkTz)
				} else {
					loc, err := lookupZone(f)
					switch {
					case err == errPosixDST:
						namedZone = true
						if d.zoneErr == nil {
							d.zoneErr = err
						}
					case err != nil:
						return d, 0, err
					case loc == nil:
						return d, 0, &ValueError{Code: pgerrcode.InvalidParameterValue, Msg: "time zone not recognized"}
					default:
						namedTz, namedZone = loc, true
					}
					tmask = dtkM(tkTz)
				}
			} else {
				r, code := decodeDate(f, fmask, &is2digits, tm, env)
				if code != 0 {
					return d, code, nil
				}
				tmask = r
			}
		case dtkTime:
			if ptype != 0 {
				if ptype != dtkTime {
					return d, dterrBadFormat, nil
				}
				ptype = 0
			}
			r, code := decodeTime(f, tm, &d.fsec)
			if code != 0 {
				return d, code, nil
			}
			tmask = r
			if timeOverflows(tm.hour, tm.min, tm.sec, d.fsec) {
				return d, dterrFieldOverflow, nil
			}
		case dtkTz:
			tz, code := decodeTimezone(f)
			if code != 0 {
				return d, code, nil
			}
			d.tz, d.tzSet = tz, true
			tmask = dtkM(tkTz)
		case dtkNumber:
			if ptype != 0 {
				val, cp, over := cStrtoint(f)
				if over {
					return d, dterrFieldOverflow, nil
				}
				if strings.HasPrefix(cp, ".") {
					switch ptype {
					case dtkJulian, dtkTime, dtkSecond:
					default:
						return d, dterrBadFormat, nil
					}
				} else if cp != "" {
					return d, dterrBadFormat, nil
				}
				switch ptype {
				case dtkYear:
					tm.year = val
					tmask = dtkM(tkYear)
				case dtkMonth:
					if fmask&dtkM(tkMonth) != 0 && fmask&dtkM(tkHour) != 0 {
						tm.min = val
						tmask = dtkM(tkMinute)
					} else {
						tm.mon = val
						tmask = dtkM(tkMonth)
					}
				case dtkDay:
					tm.mday = val
					tmask = dtkM(tkDay)
				case dtkHour:
					tm.hour = val
					tmask = dtkM(tkHour)
				case dtkMinute:
					tm.min = val
					tmask = dtkM(tkMinute)
				case dtkSecond:
					tm.sec = val
					tmask = dtkM(tkSecond)
					if strings.HasPrefix(cp, ".") {
						fs, code := parseFractionalSecond(cp)
						if code != 0 {
							return d, code, nil
						}
						d.fsec = fs
						tmask = dtkAllSecsM
					}
				case dtkJulian:
					if val < 0 {
						return d, dterrFieldOverflow, nil
					}
					tmask = dtkDateM
					tm.year, tm.mon, tm.mday = j2date(val)
					isjulian = true
					if strings.HasPrefix(cp, ".") {
						frac, code := parseFraction(cp)
						if code != 0 {
							return d, code, nil
						}
						dt2time(int64(frac*float64(usecsPerDay)), tm, &d.fsec)
						tmask |= dtkTimeM
					}
				case dtkTime:
					r, code := decodeNumberField(f, fmask|dtkDateM, tm, &d.fsec, &is2digits)
					if code < 0 {
						return d, code, nil
					}
					tmask = r
					if tmask != dtkTimeM {
						return d, dterrBadFormat, nil
					}
				default:
					return d, dterrBadFormat, nil
				}
				ptype = 0
				d.dtype = dtkDate
			} else {
				flen := len(f)
				dot := strings.IndexByte(f, '.')
				switch {
				case dot >= 0 && fmask&dtkDateM == 0:
					r, code := decodeDate(f, fmask, &is2digits, tm, env)
					if code != 0 {
						return d, code, nil
					}
					tmask = r
				case dot >= 0 && dot > 2:
					r, code := decodeNumberField(f, fmask, tm, &d.fsec, &is2digits)
					if code < 0 {
						return d, code, nil
					}
					tmask = r
				case flen >= 6 && (fmask&dtkDateM == 0 || fmask&dtkTimeM == 0):
					r, code := decodeNumberField(f, fmask, tm, &d.fsec, &is2digits)
					if code < 0 {
						return d, code, nil
					}
					tmask = r
				default:
					r, code := decodeNumber(flen, f, haveTextMonth, fmask, tm, &d.fsec, &is2digits, env)
					if code != 0 {
						return d, code, nil
					}
					tmask = r
				}
			}
		case dtkString, dtkSpecial:
			typ, val, zerr := decodeTimezoneAbbrev(f)
			if typ == tkUnknown {
				if t, ok := datetktbl[f]; ok {
					typ, val = t.typ, t.val
				}
			}
			if typ == tkIgnore {
				continue
			}
			tmask = dtkM(typ)
			switch typ {
			case tkReserv:
				switch val {
				case dtkNow, dtkYesterday, dtkToday, dtkTomorrow:
					return d, 0, &dtRefusal{
						msg:  "date/time values relative to the current time ('now', 'today', 'tomorrow', 'yesterday') are refused for PHI columns: the proxy cannot know the server's transaction time",
						hint: "Compute the value in the application and send it as a literal date or timestamp.",
					}
				case dtkZulu:
					tmask = dtkTimeM | dtkM(tkTz)
					d.dtype = dtkDate
					tm.hour, tm.min, tm.sec = 0, 0, 0
					d.tz, d.tzSet = 0, true
				default:
					d.dtype = val
				}
			case tkMonth:
				if fmask&dtkM(tkMonth) != 0 && !haveTextMonth && fmask&dtkM(tkDay) == 0 && tm.mon >= 1 && tm.mon <= 31 {
					tm.mday = tm.mon
					tmask = dtkM(tkDay)
				}
				haveTextMonth = true
				tm.mon = val
			case tkDtzmod:
				tmask |= dtkM(tkDtz)
				tm.isdst = 1
				d.tz -= val
				d.tzSet = true
			case tkDtz:
				tmask |= dtkM(tkTz)
				tm.isdst = 1
				d.tz, d.tzSet = -val, true
				if zerr != nil && d.zoneErr == nil {
					d.zoneErr = zerr
				}
			case tkTz:
				tm.isdst = 0
				d.tz, d.tzSet = -val, true
				if zerr != nil && d.zoneErr == nil {
					d.zoneErr = zerr
				}
			case tkDyntz:
				tmask |= dtkM(tkTz)
				d.tzSet = true
				if zerr != nil && d.zoneErr == nil {
					d.zoneErr = zerr
				}
			case tkAmpm:
				mer = val
			case tkAdbc:
				isBC = val == bc
			case tkDow:
				tm.wday = val
			case tkUnits:
				tmask = 0
				ptype = val
			case tkIsotime:
				tmask = 0
				if fmask&dtkDateM != dtkDateM {
					return d, dterrBadFormat, nil
				}
				if i >= nf-1 || (ftypes[i+1] != dtkNumber && ftypes[i+1] != dtkTime && ftypes[i+1] != dtkDate) {
					return d, dterrBadFormat, nil
				}
				ptype = val
			case tkUnknown:
				loc, err := lookupZone(f)
				switch {
				case err == errPosixDST:
					namedZone = true
					if d.zoneErr == nil {
						d.zoneErr = err
					}
				case err != nil:
					return d, 0, err
				case loc == nil:
					return d, dterrBadFormat, nil
				default:
					namedTz, namedZone = loc, true
				}
				tmask = dtkM(tkTz)
			default:
				return d, dterrBadFormat, nil
			}
		default:
			return d, dterrBadFormat, nil
		}
		if tmask&fmask != 0 {
			return d, dterrBadFormat, nil
		}
		fmask |= tmask
	}

	if code := validateDate(fmask, isjulian, is2digits, isBC, tm); code != 0 {
		return d, code, nil
	}
	if mer != hr24 && tm.hour > 12 {
		return d, dterrFieldOverflow, nil
	}
	if mer == am && tm.hour == 12 {
		tm.hour = 0
	} else if mer == pm && tm.hour != 12 {
		tm.hour += 12
	}
	if d.dtype == dtkDate {
		if fmask&dtkDateM != dtkDateM {
			if fmask&dtkTimeM == dtkTimeM {
				return d, 1, nil
			}
			return d, dterrBadFormat, nil
		}
		if namedZone {
			if fmask&dtkM(tkDtzmod) != 0 {
				return d, dterrBadFormat, nil
			}
			if namedTz != nil {
				d.tz, d.tzSet = determineTimeZoneOffset(tm, namedTz), true
			}
		}
		if fmask&dtkM(tkTz) == 0 {
			if fmask&dtkM(tkDtzmod) != 0 {
				return d, dterrBadFormat, nil
			}
			d.needSession, d.tzSet = true, false
		}
	}
	return d, 0, nil
}

// decodeDate is DecodeDate.
func decodeDate(str string, fmask int, is2digits *bool, tm *pgTm, env *dtEnv) (int, int) {
	var fields []string
	tmask := 0
	i := 0
	for i < len(str) && len(fields) < maxDateFields {
		for i < len(str) && !isAlnum(str[i]) {
			i++
		}
		if i >= len(str) {
			return 0, dterrBadFormat
		}
		start := i
		if isDigit(str[i]) {
			for i < len(str) && isDigit(str[i]) {
				i++
			}
		} else if isAlpha(str[i]) {
			for i < len(str) && isAlpha(str[i]) {
				i++
			}
		}
		fields = append(fields, str[start:i])
		if i < len(str) {
			i++ // the separator (whatever it is) ends the field
		}
	}
	haveTextMonth := false
	done := make([]bool, len(fields))
	for k, f := range fields {
		if f != "" && isAlpha(f[0]) {
			t, ok := datetktbl[f]
			typ, val := tkUnknown, 0
			if ok {
				typ, val = t.typ, t.val
			}
			if typ == tkIgnore {
				continue
			}
			dmask := dtkM(typ)
			if typ != tkMonth {
				return 0, dterrBadFormat
			}
			tm.mon = val
			haveTextMonth = true
			if fmask&dmask != 0 {
				return 0, dterrBadFormat
			}
			fmask |= dmask
			tmask |= dmask
			done[k] = true
		}
	}
	for k, f := range fields {
		if done[k] {
			continue
		}
		if len(f) == 0 {
			return 0, dterrBadFormat
		}
		var fsec int32
		dmask, code := decodeNumber(len(f), f, haveTextMonth, fmask, tm, &fsec, is2digits, env)
		if code != 0 {
			return 0, code
		}
		if fmask&dmask != 0 {
			return 0, dterrBadFormat
		}
		fmask |= dmask
		tmask |= dmask
	}
	if fmask&^(dtkM(tkDoy)|dtkM(tkTz)) != dtkDateM {
		return 0, dterrBadFormat
	}
	return tmask, 0
}

// validateDate is ValidateDate.
func validateDate(fmask int, isjulian, is2digits, isBC bool, tm *pgTm) int {
	if fmask&dtkM(tkYear) != 0 {
		switch {
		case isjulian:
		case isBC:
			if tm.year <= 0 {
				return dterrFieldOverflow
			}
			tm.year = -(tm.year - 1)
		case is2digits:
			if tm.year < 0 {
				return dterrFieldOverflow
			}
			if tm.year < 70 {
				tm.year += 2000
			} else if tm.year < 100 {
				tm.year += 1900
			}
		default:
			if tm.year <= 0 {
				return dterrFieldOverflow
			}
		}
	}
	if fmask&dtkM(tkDoy) != 0 {
		tm.year, tm.mon, tm.mday = j2date(date2j(tm.year, 1, 1) + tm.yday - 1)
	}
	if fmask&dtkM(tkMonth) != 0 && (tm.mon < 1 || tm.mon > 12) {
		return dterrMDFieldOverflow
	}
	if fmask&dtkM(tkDay) != 0 && (tm.mday < 1 || tm.mday > 31) {
		return dterrMDFieldOverflow
	}
	if fmask&dtkDateM == dtkDateM {
		if tm.mday > daysIn(tm.year, tm.mon) {
			return dterrFieldOverflow
		}
	}
	return 0
}

func isLeap(y int) bool { return y%4 == 0 && (y%100 != 0 || y%400 == 0) }

func daysIn(year, mon int) int {
	days := [12]int{31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}
	if mon == 2 && isLeap(year) {
		return 29
	}
	return days[mon-1]
}

// decodeTime is DecodeTime (DecodeTimeCommon for a timestamp).
func decodeTime(str string, tm *pgTm, fsec *int32) (int, int) {
	var fs int32
	hour, cp := strtolRest(str)
	if hour.over {
		return 0, dterrFieldOverflow
	}
	if !strings.HasPrefix(cp, ":") {
		return 0, dterrBadFormat
	}
	min, cp, over := cStrtoint(cp[1:])
	if over {
		return 0, dterrFieldOverflow
	}
	h := hour.v
	var sec int
	switch {
	case cp == "":
		sec = 0
	case cp[0] == '.':
		// mm:ss.sss is always MINUTE TO SECOND
		f, code := parseFractionalSecond(cp)
		if code != 0 {
			return 0, code
		}
		fs = f
		if h > math.MaxInt32 || h < math.MinInt32 {
			return 0, dterrFieldOverflow
		}
		sec = min
		min = int(h)
		h = 0
	case cp[0] == ':':
		var over bool
		sec, cp, over = cStrtoint(cp[1:])
		if over {
			return 0, dterrFieldOverflow
		}
		if strings.HasPrefix(cp, ".") {
			f, code := parseFractionalSecond(cp)
			if code != 0 {
				return 0, code
			}
			fs = f
		} else if cp != "" {
			return 0, dterrBadFormat
		}
	default:
		return 0, dterrBadFormat
	}
	if h < 0 || min < 0 || min > 59 || sec < 0 || sec > 60 || fs < 0 || int64(fs) > usecsPerSec {
		return 0, dterrFieldOverflow
	}
	if h > math.MaxInt32 {
		return 0, dterrFieldOverflow
	}
	tm.hour, tm.min, tm.sec = int(h), min, sec
	*fsec = fs
	return dtkTimeM, 0
}

type strtolResult struct {
	v    int64
	over bool
}

// strtolRest is strtoi64(s, &end, 10): value, overflow, rest.
func strtolRest(s string) (strtolResult, string) {
	v, end := strtol(s, 0)
	if end == 0 {
		return strtolResult{}, s
	}
	// strtol saturates; a saturated value means ERANGE unless the input
	// really was the extreme, which no time field is.
	over := v == math.MaxInt64 || v == math.MinInt64
	return strtolResult{v: v, over: over}, s[end:]
}

// decodeNumber is DecodeNumber.
func decodeNumber(flen int, str string, haveTextMonth bool, fmask int, tm *pgTm, fsec *int32, is2digits *bool, env *dtEnv) (int, int) {
	tmask := 0
	val, cp, over := cStrtoint(str)
	if over {
		return 0, dterrFieldOverflow
	}
	if len(cp) == len(str) {
		return 0, dterrBadFormat
	}
	if strings.HasPrefix(cp, ".") {
		if len(str)-len(cp) > 2 {
			r, code := decodeNumberField(str, fmask|dtkDateM, tm, fsec, is2digits)
			if code < 0 {
				return 0, code
			}
			return r, 0
		}
		f, code := parseFractionalSecond(cp)
		if code != 0 {
			return 0, code
		}
		*fsec = f
	} else if cp != "" {
		return 0, dterrBadFormat
	}
	if flen == 3 && fmask&dtkDateM == dtkM(tkYear) && val >= 1 && val <= 366 {
		tm.yday = val
		return dtkM(tkDoy) | dtkM(tkMonth) | dtkM(tkDay), 0
	}
	order := env.order
	switch fmask & dtkDateM {
	case 0:
		if flen >= 3 {
			tmask = dtkM(tkYear)
			tm.year = val
			break
		}
		o, ok := order()
		if !ok {
			return 0, dterrSettings
		}
		switch o {
		case orderYMD:
			tmask = dtkM(tkYear)
			tm.year = val
		case orderDMY:
			tmask = dtkM(tkDay)
			tm.mday = val
		default:
			tmask = dtkM(tkMonth)
			tm.mon = val
		}
	case dtkM(tkYear):
		tmask = dtkM(tkMonth)
		tm.mon = val
	case dtkM(tkMonth):
		if haveTextMonth {
			ymd := flen >= 3
			if !ymd {
				o, ok := order()
				if !ok {
					return 0, dterrSettings
				}
				ymd = o == orderYMD
			}
			if ymd {
				tmask = dtkM(tkYear)
				tm.year = val
			} else {
				tmask = dtkM(tkDay)
				tm.mday = val
			}
		} else {
			tmask = dtkM(tkDay)
			tm.mday = val
		}
	case dtkM(tkYear) | dtkM(tkMonth):
		if haveTextMonth {
			if flen >= 3 && *is2digits {
				tmask = dtkM(tkDay)
				tm.mday = tm.year
				tm.year = val
				*is2digits = false
			} else {
				tmask = dtkM(tkDay)
				tm.mday = val
			}
		} else {
			tmask = dtkM(tkDay)
			tm.mday = val
		}
	case dtkM(tkDay):
		tmask = dtkM(tkMonth)
		tm.mon = val
	case dtkM(tkMonth) | dtkM(tkDay):
		tmask = dtkM(tkYear)
		tm.year = val
	case dtkDateM:
		r, code := decodeNumberField(str, fmask, tm, fsec, is2digits)
		if code < 0 {
			return 0, code
		}
		return r, 0
	default:
		return 0, dterrBadFormat
	}
	if tmask == dtkM(tkYear) {
		*is2digits = flen <= 2
	}
	return tmask, 0
}

// decodeNumberField is DecodeNumberField: it returns the field mask it
// filled (PostgreSQL returns DTK_DATE or DTK_TIME and sets *tmask).
func decodeNumberField(str string, fmask int, tm *pgTm, fsec *int32, is2digits *bool) (int, int) {
	if k := strings.IndexByte(str, '.'); k >= 0 {
		cp := str[k:]
		if cp == "." {
			*fsec = 0
		} else {
			frac, _ := cStrtodFraction(cp)
			*fsec = int32(math.RoundToEven(frac * 1000000))
		}
		str = str[:k]
	} else if fmask&dtkDateM != dtkDateM {
		if n := len(str); n >= 6 {
			tm.mday = cAtoi(str[n-2:])
			tm.mon = cAtoi(str[n-4 : n-2])
			tm.year = cAtoi(str[:n-4])
			if n-4 == 2 {
				*is2digits = true
			}
			return dtkDateM, 0
		}
	}
	if fmask&dtkTimeM != dtkTimeM {
		switch n := len(str); n {
		case 6:
			tm.sec = cAtoi(str[4:])
			tm.min = cAtoi(str[2:4])
			tm.hour = cAtoi(str[:2])
			return dtkTimeM, 0
		case 4:
			tm.sec = 0
			tm.min = cAtoi(str[2:])
			tm.hour = cAtoi(str[:2])
			return dtkTimeM, 0
		}
	}
	return 0, dterrBadFormat
}

// decodeTimezone is DecodeTimezone: the offset in seconds west of UTC.
func decodeTimezone(str string) (int, int) {
	if str == "" || (str[0] != '+' && str[0] != '-') {
		return 0, dterrBadFormat
	}
	hr, cp, over := cStrtoint(str[1:])
	if over {
		return 0, dterrTZDispOverflow
	}
	min, sec := 0, 0
	switch {
	case strings.HasPrefix(cp, ":"):
		min, cp, over = cStrtoint(cp[1:])
		if over {
			return 0, dterrTZDispOverflow
		}
		if strings.HasPrefix(cp, ":") {
			sec, cp, over = cStrtoint(cp[1:])
			if over {
				return 0, dterrTZDispOverflow
			}
		}
	case cp == "" && len(str) > 3:
		min = hr % 100
		hr = hr / 100
	}
	if hr < 0 || hr > maxTzDispHour || min < 0 || min >= 60 || sec < 0 || sec >= 60 {
		return 0, dterrTZDispOverflow
	}
	tz := (hr*60+min)*60 + sec
	if str[0] == '-' {
		tz = -tz
	}
	if cp != "" {
		return 0, dterrBadFormat
	}
	return -tz, 0
}

// timeOverflows is time_overflows of date.c.
func timeOverflows(hour, min, sec int, fsec int32) bool {
	if hour < 0 || hour > 24 || min < 0 || min >= 60 || sec < 0 || sec > 60 || fsec < 0 || int64(fsec) > usecsPerSec {
		return true
	}
	return ((int64(hour)*60+int64(min))*60+int64(sec))*usecsPerSec+int64(fsec) > usecsPerDay
}

// date2j is date2j of datetime.c.
func date2j(y, m, d int) int {
	if m > 2 {
		m++
		y += 4800
	} else {
		m += 13
		y += 4799
	}
	century := y / 100
	julian := y*365 - 32167
	julian += y/4 - century + century/4
	julian += 7834*m/256 + d
	return julian
}

// j2date is j2date of datetime.c (unsigned arithmetic as in C).
func j2date(jd int) (year, month, day int) {
	julian := uint32(jd)
	julian += 32044
	quad := julian / 146097
	extra := (julian-quad*146097)*4 + 3
	julian += 60 + quad*3 + extra/146097
	quad = julian / 1461
	julian -= quad * 1461
	y := int(julian * 4 / 1461)
	if y != 0 {
		julian = (julian+305)%365 + 123
	} else {
		julian = (julian+306)%366 + 123
	}
	y += int(quad * 4)
	year = y - 4800
	quad = julian * 2141 / 65536
	day = int(julian - 7834*quad/256)
	month = int((quad+10)%12 + 1)
	return
}

// j2day is j2day: 0..6 = Sunday..Saturday.
func j2day(date int) int {
	date++
	date %= 7
	if date < 0 {
		date += 7
	}
	return date
}

// dt2time is dt2time: a time of day in microseconds into tm.
func dt2time(t int64, tm *pgTm, fsec *int32) {
	tm.hour = int(t / usecsPerHour)
	t -= int64(tm.hour) * usecsPerHour
	tm.min = int(t / usecsPerMinute)
	t -= int64(tm.min) * usecsPerMinute
	tm.sec = int(t / usecsPerSec)
	*fsec = int32(t - int64(tm.sec)*usecsPerSec)
}

func isValidJulian(y, m int) bool {
	return (y > julianMinYear || (y == julianMinYear && m >= julianMinMonth)) &&
		(y < julianMaxYear || (y == julianMaxYear && m < julianMaxMonth))
}

func isValidDate(d int64) bool {
	return -postgresEpochJDate <= d && d < dateEndJulian-postgresEpochJDate
}

func isValidTimestamp(t int64) bool { return minTimestamp <= t && t < endTimestamp }

// determineTimeZoneOffset is DetermineTimeZoneOffset: the offset, in
// seconds west of UTC, that zone has at the local time tm. In a
// spring-forward gap the offset before the transition is used, in a
// fall-back overlap the one after it.
func determineTimeZoneOffset(tm *pgTm, zone *time.Location) int {
	if !isValidJulian(tm.year, tm.mon) {
		tm.isdst = 0
		return 0
	}
	date := int64(date2j(tm.year, tm.mon, tm.mday) - unixEpochJDate)
	mytime := date*secsPerDay + int64(tm.sec+(tm.min+tm.hour*60)*60)
	prev := time.Unix(mytime-secsPerDay, 0).In(zone)
	_, beforeOff := prev.Zone()
	_, end := prev.ZoneBounds()
	if end.IsZero() {
		return -beforeOff
	}
	_, afterOff := end.In(zone).Zone()
	boundary := end.Unix()
	beforetime := mytime - int64(beforeOff)
	aftertime := mytime - int64(afterOff)
	if beforetime < boundary && aftertime < boundary {
		return -beforeOff
	}
	if beforetime > boundary && aftertime >= boundary {
		return -afterOff
	}
	if beforetime > aftertime {
		return -beforeOff
	}
	return -afterOff
}

// tm2timestamp is tm2timestamp: microseconds since 2000-01-01, with tz
// (seconds west of UTC) applied when hasTz.
func tm2timestamp(tm *pgTm, fsec int32, tz int, hasTz bool) (int64, bool) {
	if !isValidJulian(tm.year, tm.mon) {
		return 0, false
	}
	date := int64(date2j(tm.year, tm.mon, tm.mday) - postgresEpochJDate)
	t := ((int64(tm.hour)*60+int64(tm.min))*60+int64(tm.sec))*usecsPerSec + int64(fsec)
	result := date*usecsPerDay + t
	if (result-t)/usecsPerDay != date {
		return 0, false
	}
	if (result < 0 && date > 0) || (result > 0 && date < -1) {
		return 0, false
	}
	if hasTz {
		result += int64(tz) * usecsPerSec
	}
	if !isValidTimestamp(result) {
		return 0, false
	}
	return result, true
}

// timestamp2tm is timestamp2tm: dt (microseconds since 2000) split into
// fields, in zone when not nil (with the offset west of UTC and the zone
// abbreviation).
func timestamp2tm(dt int64, zone *time.Location) (tm pgTm, fsec int32, tz int, tzn string, ok bool) {
	t := dt
	date := t / usecsPerDay
	t -= date * usecsPerDay
	if t < 0 {
		t += usecsPerDay
		date--
	}
	date += postgresEpochJDate
	if date < 0 || date > math.MaxInt32 {
		return tm, 0, 0, "", false
	}
	tm.year, tm.mon, tm.mday = j2date(int(date))
	dt2time(t, &tm, &fsec)
	if zone == nil {
		tm.isdst = -1
		return tm, fsec, 0, "", true
	}
	secs := (dt-int64(fsec))/usecsPerSec + (postgresEpochJDate-unixEpochJDate)*secsPerDay
	lt := time.Unix(secs, 0).In(zone)
	name, off := lt.Zone()
	tm.year, tm.mon, tm.mday = lt.Year(), int(lt.Month()), lt.Day()
	tm.hour, tm.min, tm.sec = lt.Hour(), lt.Minute(), lt.Second()
	tm.isdst = 0
	if lt.IsDST() {
		tm.isdst = 1
	}
	return tm, fsec, -off, name, true
}

// readDate is date_in.
func readDate(s string, env *dtEnv) (int32, error) {
	fields, ftypes, code := parseDateTime(s, maxDateLen+1)
	var d decoded
	var err error
	if code == 0 {
		d, code, err = decodeDateTime(fields, ftypes, env)
	}
	if err != nil {
		return 0, dtReport(err, policy.TypeDate)
	}
	if env.err != nil {
		return 0, dtReport(env.err, policy.TypeDate)
	}
	if code != 0 {
		return 0, dtError(code, policy.TypeDate, "date")
	}
	switch d.dtype {
	case dtkDate:
	case dtkEpoch:
		d.tm = pgTm{year: 1970, mon: 1, mday: 1}
	case dtkLate:
		return dateNoEnd, nil
	case dtkEarly:
		return dateNoBegin, nil
	default:
		return 0, dtError(dterrBadFormat, policy.TypeDate, "date")
	}
	if !isValidJulian(d.tm.year, d.tm.mon) {
		return 0, &ValueError{Type: policy.TypeDate, Code: pgerrcode.DatetimeFieldOverflow, Msg: "date out of range"}
	}
	date := int64(date2j(d.tm.year, d.tm.mon, d.tm.mday) - postgresEpochJDate)
	if !isValidDate(date) {
		return 0, &ValueError{Type: policy.TypeDate, Code: pgerrcode.DatetimeFieldOverflow, Msg: "date out of range"}
	}
	return int32(date), nil
}

// readTimestamp is timestamp_in (withTz false) or timestamptz_in.
func readTimestamp(s string, withTz bool, env *dtEnv) (int64, error) {
	t, name := policy.TypeTimestamptz, "timestamp with time zone"
	if !withTz {
		name = "timestamp without time zone"
	}
	fields, ftypes, code := parseDateTime(s, maxDateLen+maxDateFields)
	var d decoded
	var err error
	if code == 0 {
		d, code, err = decodeDateTime(fields, ftypes, env)
	}
	if err != nil {
		return 0, dtReport(err, t)
	}
	if env.err != nil {
		return 0, dtReport(env.err, t)
	}
	if code != 0 {
		return 0, dtError(code, t, name)
	}
	switch d.dtype {
	case dtkDate:
		tz, hasTz := 0, false
		if withTz {
			switch {
			case d.zoneErr != nil:
				return 0, dtReport(d.zoneErr, t)
			case d.needSession:
				zone, err := env.zone()
				if err != nil {
					return 0, dtReport(err, t)
				}
				tz = determineTimeZoneOffset(&d.tm, zone)
			default:
				tz = d.tz
			}
			hasTz = true
		}
		ts, ok := tm2timestamp(&d.tm, d.fsec, tz, hasTz)
		if !ok {
			return 0, &ValueError{Type: t, Code: pgerrcode.DatetimeFieldOverflow, Msg: "timestamp out of range"}
		}
		return ts, nil
	case dtkEpoch:
		return -int64(postgresEpochJDate-unixEpochJDate) * usecsPerDay, nil
	case dtkLate:
		return tsNoEnd, nil
	case dtkEarly:
		return tsNoBegin, nil
	}
	return 0, dtError(dterrBadFormat, t, name)
}

// dtReport gives a decoder's error its type.
func dtReport(err error, t policy.LogicalType) error {
	switch e := err.(type) {
	case *dtRefusal:
		return &ValueError{Type: t, Code: pgerrcode.FeatureNotSupported, Msg: e.msg, Hnt: e.hint}
	case *settingsError:
		return &ValueError{Type: t, Code: pgerrcode.FeatureNotSupported, Msg: e.msg, Hnt: e.hint}
	case *ValueError:
		if e.Type == "" {
			e.Type = t
		}
	}
	return err
}

// Output: EncodeDateOnly and EncodeDateTime.

var monthNames = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}
var dayNames = [...]string{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}

// appendZeroPad is pg_ultostr_zeropad.
func appendZeroPad(dst []byte, v, width int) []byte {
	s := strconv.Itoa(v)
	for i := len(s); i < width; i++ {
		dst = append(dst, '0')
	}
	return append(dst, s...)
}

func appendYear(dst []byte, year int) []byte {
	if year <= 0 {
		year = -(year - 1)
	}
	return appendZeroPad(dst, year, 4)
}

// appendSeconds is AppendTimestampSeconds: two digits and the fraction
// without trailing zeros.
func appendSeconds(dst []byte, sec int, fsec int32) []byte {
	dst = appendZeroPad(dst, sec, 2)
	if fsec != 0 {
		f := []byte(strconv.Itoa(int(1000000 + fsec))[1:])
		for len(f) > 0 && f[len(f)-1] == '0' {
			f = f[:len(f)-1]
		}
		dst = append(dst, '.')
		dst = append(dst, f...)
	}
	return dst
}

// appendTimezone is EncodeTimezone (tz west of UTC).
func appendTimezone(dst []byte, tz int) []byte {
	sec := tz
	if sec < 0 {
		sec = -sec
	}
	min := sec / 60
	sec -= min * 60
	hour := min / 60
	min -= hour * 60
	if tz <= 0 {
		dst = append(dst, '+')
	} else {
		dst = append(dst, '-')
	}
	dst = appendZeroPad(dst, hour, 2)
	if sec != 0 {
		dst = append(dst, ':')
		dst = appendZeroPad(dst, min, 2)
		dst = append(dst, ':')
		return appendZeroPad(dst, sec, 2)
	}
	if min != 0 {
		dst = append(dst, ':')
		dst = appendZeroPad(dst, min, 2)
	}
	return dst
}

// appendDate is date_out.
func appendDate(dst []byte, date int32, ds dateStyle) []byte {
	switch date {
	case dateNoBegin:
		return append(dst, "-infinity"...)
	case dateNoEnd:
		return append(dst, "infinity"...)
	}
	var tm pgTm
	tm.year, tm.mon, tm.mday = j2date(int(date) + postgresEpochJDate)
	return appendDateOnly(dst, &tm, ds)
}

// appendDateOnly is EncodeDateOnly.
func appendDateOnly(dst []byte, tm *pgTm, ds dateStyle) []byte {
	switch ds.style {
	case styleISO:
		dst = appendYear(dst, tm.year)
		dst = append(dst, '-')
		dst = appendZeroPad(dst, tm.mon, 2)
		dst = append(dst, '-')
		dst = appendZeroPad(dst, tm.mday, 2)
	case styleSQL:
		if ds.order == orderDMY {
			dst = appendZeroPad(dst, tm.mday, 2)
			dst = append(dst, '/')
			dst = appendZeroPad(dst, tm.mon, 2)
		} else {
			dst = appendZeroPad(dst, tm.mon, 2)
			dst = append(dst, '/')
			dst = appendZeroPad(dst, tm.mday, 2)
		}
		dst = append(dst, '/')
		dst = appendYear(dst, tm.year)
	case styleGerman:
		dst = appendZeroPad(dst, tm.mday, 2)
		dst = append(dst, '.')
		dst = appendZeroPad(dst, tm.mon, 2)
		dst = append(dst, '.')
		dst = appendYear(dst, tm.year)
	default: // Postgres
		if ds.order == orderDMY {
			dst = appendZeroPad(dst, tm.mday, 2)
			dst = append(dst, '-')
			dst = appendZeroPad(dst, tm.mon, 2)
		} else {
			dst = appendZeroPad(dst, tm.mon, 2)
			dst = append(dst, '-')
			dst = appendZeroPad(dst, tm.mday, 2)
		}
		dst = append(dst, '-')
		dst = appendYear(dst, tm.year)
	}
	if tm.year <= 0 {
		dst = append(dst, " BC"...)
	}
	return dst
}

// appendTimestamp is timestamptz_out (zone not nil) or timestamp_out.
func appendTimestamp(dst []byte, ts int64, zone *time.Location, ds dateStyle) ([]byte, bool) {
	switch ts {
	case tsNoBegin:
		return append(dst, "-infinity"...), true
	case tsNoEnd:
		return append(dst, "infinity"...), true
	}
	tm, fsec, tz, tzn, ok := timestamp2tm(ts, zone)
	if !ok {
		return dst, false
	}
	return appendDateTime(dst, &tm, fsec, zone != nil, tz, tzn, ds), true
}

// appendDateTime is EncodeDateTime.
func appendDateTime(dst []byte, tm *pgTm, fsec int32, printTz bool, tz int, tzn string, ds dateStyle) []byte {
	if tm.isdst < 0 {
		printTz = false
	}
	if len(tzn) > 10 { // MAXTZLEN
		tzn = tzn[:10]
	}
	switch ds.style {
	case styleISO:
		dst = appendISODateTime(dst, tm, fsec)
		if printTz {
			dst = appendTimezone(dst, tz)
		}
	case styleSQL, styleGerman:
		if ds.style == styleGerman {
			dst = appendZeroPad(dst, tm.mday, 2)
			dst = append(dst, '.')
			dst = appendZeroPad(dst, tm.mon, 2)
			dst = append(dst, '.')
		} else if ds.order == orderDMY {
			dst = appendZeroPad(dst, tm.mday, 2)
			dst = append(dst, '/')
			dst = appendZeroPad(dst, tm.mon, 2)
			dst = append(dst, '/')
		} else {
			dst = appendZeroPad(dst, tm.mon, 2)
			dst = append(dst, '/')
			dst = appendZeroPad(dst, tm.mday, 2)
			dst = append(dst, '/')
		}
		dst = appendYear(dst, tm.year)
		dst = append(dst, ' ')
		dst = appendZeroPad(dst, tm.hour, 2)
		dst = append(dst, ':')
		dst = appendZeroPad(dst, tm.min, 2)
		dst = append(dst, ':')
		dst = appendSeconds(dst, tm.sec, fsec)
		if printTz {
			if tzn != "" {
				dst = append(dst, ' ')
				dst = append(dst, tzn...)
			} else {
				dst = appendTimezone(dst, tz)
			}
		}
	default: // Postgres
		wday := j2day(date2j(tm.year, tm.mon, tm.mday))
		dst = append(dst, dayNames[wday]...)
		dst = append(dst, ' ')
		if ds.order == orderDMY {
			dst = appendZeroPad(dst, tm.mday, 2)
			dst = append(dst, ' ')
			dst = append(dst, monthNames[tm.mon-1]...)
		} else {
			dst = append(dst, monthNames[tm.mon-1]...)
			dst = append(dst, ' ')
			dst = appendZeroPad(dst, tm.mday, 2)
		}
		dst = append(dst, ' ')
		dst = appendZeroPad(dst, tm.hour, 2)
		dst = append(dst, ':')
		dst = appendZeroPad(dst, tm.min, 2)
		dst = append(dst, ':')
		dst = appendSeconds(dst, tm.sec, fsec)
		dst = append(dst, ' ')
		dst = appendYear(dst, tm.year)
		if printTz {
			if tzn != "" {
				dst = append(dst, ' ')
				dst = append(dst, tzn...)
			} else {
				dst = append(dst, ' ')
				dst = appendTimezone(dst, tz)
			}
		}
	}
	if tm.year <= 0 {
		dst = append(dst, " BC"...)
	}
	return dst
}

// appendISODateTime appends tm as ISO "YYYY-MM-DD hh:mm:ss[.ffffff]", the
// part PostgreSQL's ISO timestamp output and the stored canonical form
// share (the zone follows, as each needs).
func appendISODateTime(dst []byte, tm *pgTm, fsec int32) []byte {
	dst = appendYear(dst, tm.year)
	dst = append(dst, '-')
	dst = appendZeroPad(dst, tm.mon, 2)
	dst = append(dst, '-')
	dst = appendZeroPad(dst, tm.mday, 2)
	dst = append(dst, ' ')
	dst = appendZeroPad(dst, tm.hour, 2)
	dst = append(dst, ':')
	dst = appendZeroPad(dst, tm.min, 2)
	dst = append(dst, ':')
	dst = appendSeconds(dst, tm.sec, fsec)
	return dst
}
