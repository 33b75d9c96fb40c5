package auditlog

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
	"unicode/utf8"
)

// Version is the record format version written in every record's "v".
const Version = 1

// Record types.
const (
	TypeStart     = "start"     // opens a segment (written by Log)
	TypeStatement = "statement" // a statement that read, wrote or searched PHI
	TypeRefusal   = "refusal"   // a statement the proxy refused
	TypeLost      = "lost"      // records that could not be written (written by Log)
)

// Column operations.
const (
	OpRead   = "read"
	OpWrite  = "write"
	OpSearch = "search"
)

// Access to a column read, as the session's role has it.
const (
	AccessPlaintext = "plaintext"
	AccessMasked    = "masked"
	AccessDenied    = "denied"
)

// Outcomes.
const (
	OutcomeOK        = "ok"        // the statement completed
	OutcomeSuspended = "suspended" // an Execute stopped at its row limit
	OutcomeError     = "error"     // the server (or the proxy, on a result) failed it
	OutcomeRefused   = "refused"   // the proxy refused it
)

// Session is who a record is about: fixed for a session, shared by its
// records (immutable once a record holds it).
type Session struct {
	ConnID     uint64
	User       string
	Database   string
	ClientAddr string
	ClientCert string // subject of the verified client certificate, or ""
}

// Column is one PHI column a statement used, and how.
type Column struct {
	Name   string // schema.table.column
	Op     string // OpRead, OpWrite or OpSearch; "" for the column a refusal names otherwise
	Access string // for reads and denials: AccessPlaintext, AccessMasked, AccessDenied
}

// Record is one audit record as the PHI layer builds it. Log assigns seq
// and prev. Nothing in a Record may hold a value or SQL text: names,
// counts, codes and labels only. A Record handed to Log.Write must not be
// modified afterwards.
type Record struct {
	Time        time.Time
	Type        string // TypeStatement or TypeRefusal
	Session     *Session
	Statement   string // select, insert, update, delete or other; "" when unknown
	Fingerprint string
	// Index and Count place the statement in a text of several (Count > 1).
	Index, Count int
	Tables       []string
	Columns      []Column
	Rows         int64 // -1: none (not counted, or not applicable)
	Outcome      string
	SQLState     string
	Reason       string
}

// segment is the content of a start or lost record.
type segment struct {
	seed      string // hex
	continues string // hex, or ""
	lost      int64
	reason    string
}

// appendRecord appends the canonical encoding of one line (without its
// newline): r, or a start/lost record when r is nil.
func appendRecord(dst []byte, seq uint64, t time.Time, typ string, r *Record, sg *segment, prev string) []byte {
	dst = append(dst, `{"v":`...)
	dst = strconv.AppendInt(dst, Version, 10)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"time":"`...)
	dst = t.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, '"')
	dst = appendField(dst, "type", typ)
	if r != nil {
		if s := r.Session; s != nil {
			dst = append(dst, `,"conn_id":`...)
			dst = strconv.AppendUint(dst, s.ConnID, 10)
			dst = appendField(dst, "user", s.User)
			dst = appendField(dst, "database", s.Database)
			dst = appendField(dst, "client_addr", s.ClientAddr)
			dst = appendOptional(dst, "client_cert", s.ClientCert)
		}
		dst = appendOptional(dst, "statement", r.Statement)
		dst = appendOptional(dst, "fingerprint", r.Fingerprint)
		if r.Count > 1 {
			dst = append(dst, `,"stmt_index":`...)
			dst = strconv.AppendInt(dst, int64(r.Index), 10)
			dst = append(dst, `,"stmt_count":`...)
			dst = strconv.AppendInt(dst, int64(r.Count), 10)
		}
		if len(r.Tables) > 0 {
			dst = append(dst, `,"tables":[`...)
			for i, t := range r.Tables {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = appendString(dst, t)
			}
			dst = append(dst, ']')
		}
		if len(r.Columns) > 0 {
			dst = append(dst, `,"columns":[`...)
			for i, c := range r.Columns {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = append(dst, `{"column":`...)
				dst = appendString(dst, c.Name)
				dst = appendOptional(dst, "op", c.Op)
				dst = appendOptional(dst, "access", c.Access)
				dst = append(dst, '}')
			}
			dst = append(dst, ']')
		}
		if r.Rows >= 0 {
			dst = append(dst, `,"rows":`...)
			dst = strconv.AppendInt(dst, r.Rows, 10)
		}
		dst = appendOptional(dst, "outcome", r.Outcome)
		dst = appendOptional(dst, "sqlstate", r.SQLState)
		dst = appendOptional(dst, "reason", r.Reason)
	}
	if sg != nil {
		dst = appendOptional(dst, "seed", sg.seed)
		dst = appendOptional(dst, "continues", sg.continues)
		if sg.lost > 0 {
			dst = append(dst, `,"lost":`...)
			dst = strconv.AppendInt(dst, sg.lost, 10)
		}
		dst = appendOptional(dst, "reason", sg.reason)
	}
	dst = appendField(dst, "prev", prev)
	return append(dst, '}')
}

// lineHash is h(line): the hex SHA-256 of a line as written, without its
// newline.
func lineHash(line []byte) string {
	sum := sha256.Sum256(line)
	return hex.EncodeToString(sum[:])
}

func appendField(dst []byte, name, v string) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return appendString(dst, v)
}

func appendOptional(dst []byte, name, v string) []byte {
	if v == "" {
		return dst
	}
	return appendField(dst, name, v)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string, escaped as encoding/json
// escapes it without HTML escaping: quote, backslash and control
// characters, U+2028 and U+2029; invalid UTF-8 becomes U+FFFD.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
