package phi

import (
	"math"
	"strconv"
)

// ParseDateTime of datetime.c: date/time input split into lower-cased,
// typed fields, with the C library's number readers (strtoint, atoi, strtod)
// as datetime.c uses them.

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
