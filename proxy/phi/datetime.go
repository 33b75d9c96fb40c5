package phi

import (
	"math"
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
// the server's timezone_abbreviations for 'EST') is refused.
//
// This file holds the tables of datetime.h and datetime.c, what decoding
// may consult, the errors, and the input functions date_in and
// timestamp_in. The port continues in datetime_parse.go (ParseDateTime),
// datetime_decode.go (DecodeDateTime), datetime_fields.go (the field
// decoders), datetime_calendar.go (Julian days, time zones) and
// datetime_output.go (EncodeDateOnly and EncodeDateTime).

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
