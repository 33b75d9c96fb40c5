package phi

import (
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
)

// DecodeDateTime of datetime.c: the fields of ParseDateTime read into a
// pg_tm, a fractional second and a zone.

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
