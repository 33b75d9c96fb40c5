package phi

import (
	"math"
	"time"
)

// Calendar arithmetic of datetime.c and timestamp.c: Julian day numbers,
// the valid ranges of date and timestamp, and the conversions between a
// pg_tm and a timestamp in a time zone.

func isLeap(y int) bool { return y%4 == 0 && (y%100 != 0 || y%400 == 0) }

func daysIn(year, mon int) int {
	days := [12]int{31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}
	if mon == 2 && isLeap(year) {
		return 29
	}
	return days[mon-1]
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
