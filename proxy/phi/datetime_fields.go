package phi

import (
	"math"
	"strings"
)

// The field decoders DecodeDateTime calls (datetime.c): DecodeDate,
// ValidateDate, DecodeTime, DecodeNumber, DecodeNumberField and
// DecodeTimezone.

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
