package phi

import (
	"strconv"
	"time"
)

// Date and timestamp output: EncodeDateOnly and EncodeDateTime of
// datetime.c, under each DateStyle.

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
