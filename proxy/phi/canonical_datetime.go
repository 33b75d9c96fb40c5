package phi

// Canonical plaintext of dates and timestamps: ISO, in UTC for
// timestamptz, whatever the session's settings ("1990-01-02",
// "0044-03-15 BC", "2020-01-01 08:00:00.5Z", "infinity"). The timestamptz
// form is the one the proxy has always stored, so existing ciphertexts and
// blind indexes keep their meaning.

// appendCanonicalTimestamptz writes ts (microseconds since 2000, UTC).
func appendCanonicalTimestamptz(dst []byte, ts int64) []byte {
	switch ts {
	case tsNoBegin:
		return append(dst, "-infinity"...)
	case tsNoEnd:
		return append(dst, "infinity"...)
	}
	tm, fsec, _, _, _ := timestamp2tm(ts, nil)
	dst = appendISODateTime(dst, &tm, fsec)
	dst = append(dst, 'Z')
	if tm.year <= 0 {
		dst = append(dst, " BC"...)
	}
	return dst
}

// parseCanonicalTimestamptz reads what appendCanonicalTimestamptz wrote.
func parseCanonicalTimestamptz(b []byte) (int64, bool) {
	s := string(b)
	switch s {
	case "infinity":
		return tsNoEnd, true
	case "-infinity":
		return tsNoBegin, true
	}
	var tm pgTm
	rest, ok := parseCanonicalYMD(s, &tm)
	if !ok || len(rest) < 10 || rest[0] != ' ' || rest[3] != ':' || rest[6] != ':' {
		return 0, false
	}
	var ok1, ok2, ok3 bool
	tm.hour, ok1 = atoiN(rest[1:3])
	tm.min, ok2 = atoiN(rest[4:6])
	tm.sec, ok3 = atoiN(rest[7:9])
	if !ok1 || !ok2 || !ok3 {
		return 0, false
	}
	rest = rest[9:]
	var fsec int32
	if len(rest) > 0 && rest[0] == '.' {
		k := 1
		for k < len(rest) && isDigit(rest[k]) {
			k++
		}
		frac := rest[1:k]
		if len(frac) == 0 || len(frac) > 6 {
			return 0, false
		}
		for len(frac) < 6 {
			frac += "0"
		}
		f, _ := atoiN(frac)
		fsec = int32(f)
		rest = rest[k:]
	}
	if len(rest) == 0 || rest[0] != 'Z' {
		return 0, false
	}
	rest = rest[1:]
	if rest == " BC" {
		tm.year = -(tm.year - 1)
	} else if rest != "" {
		return 0, false
	}
	ts, ok := tm2timestamp(&tm, fsec, 0, false)
	return ts, ok
}

// parseCanonicalDate reads the canonical date (date_out in ISO style).
func parseCanonicalDate(b []byte) (int32, bool) {
	s := string(b)
	switch s {
	case "infinity":
		return dateNoEnd, true
	case "-infinity":
		return dateNoBegin, true
	}
	var tm pgTm
	rest, ok := parseCanonicalYMD(s, &tm)
	if !ok {
		return 0, false
	}
	if rest == " BC" {
		tm.year = -(tm.year - 1)
	} else if rest != "" {
		return 0, false
	}
	if !isValidJulian(tm.year, tm.mon) {
		return 0, false
	}
	return int32(date2j(tm.year, tm.mon, tm.mday) - postgresEpochJDate), true
}

// parseCanonicalYMD reads YYYY-MM-DD (four or more year digits).
func parseCanonicalYMD(s string, tm *pgTm) (string, bool) {
	k := 0
	for k < len(s) && isDigit(s[k]) {
		k++
	}
	if k < 4 || len(s) < k+6 || s[k] != '-' || s[k+3] != '-' {
		return s, false
	}
	var ok1, ok2, ok3 bool
	tm.year, ok1 = atoiN(s[:k])
	tm.mon, ok2 = atoiN(s[k+1 : k+3])
	tm.mday, ok3 = atoiN(s[k+4 : k+6])
	return s[k+6:], ok1 && ok2 && ok3 && tm.mon >= 1 && tm.mon <= 12 && tm.mday >= 1 && tm.mday <= 31
}

func atoiN(s string) (int, bool) {
	if s == "" || len(s) > 9 {
		return 0, false
	}
	v := 0
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return 0, false
		}
		v = v*10 + int(s[i]-'0')
	}
	return v, true
}
