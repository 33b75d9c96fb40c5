package auditlog

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// Head is where a verified chain ends.
type Head struct {
	Seq  uint64
	Hash string // h of the last line
}

// Summary is what Verify found in one file.
type Summary struct {
	Name     string
	Records  int // lines
	Segments int // start records
	// Continues is the hash the file's first start record continues ("" at
	// the very beginning of a log); Verify checks it only against a
	// previous file it was given.
	Continues string
	Head      Head
}

// ChainError is the first line where a file's chain is broken.
type ChainError struct {
	Name string
	Line int // 1-based
	Msg  string
}

func (e *ChainError) Error() string { return fmt.Sprintf("%s:%d: %s", e.Name, e.Line, e.Msg) }

// header holds the fields Verify reads from a line.
type header struct {
	V         int     `json:"v"`
	Seq       *uint64 `json:"seq"`
	Type      string  `json:"type"`
	Seed      string  `json:"seed"`
	Continues string  `json:"continues"`
	Prev      string  `json:"prev"`
}

// VerifyFiles checks each file's chain and, given the files of a rotated
// log in order (oldest first), that each continues the one before.
func VerifyFiles(paths ...string) ([]Summary, error) {
	var out []Summary
	var prev *Head
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return out, err
		}
		s, err := Verify(f, p, prev)
		f.Close()
		if err != nil {
			return out, err
		}
		out = append(out, s)
		h := s.Head
		prev = &h
	}
	return out, nil
}

// Verify checks the chain of one file read from r. prev, when not nil, is
// the head of the file before it (the one it was rotated from): the file's
// first record must continue it. It returns the first broken line as a
// *ChainError.
func Verify(r io.Reader, name string, prev *Head) (Summary, error) {
	s := Summary{Name: name}
	br := bufio.NewReaderSize(r, 64<<10)
	var (
		lastHash string
		lastSeq  uint64
	)
	broken := func(line int, format string, args ...any) (Summary, error) {
		return s, &ChainError{Name: name, Line: line, Msg: fmt.Sprintf(format, args...)}
	}
	for n := 1; ; n++ {
		b, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: gather it.
			full := append([]byte(nil), b...)
			for errors.Is(err, bufio.ErrBufferFull) && len(full) <= maxLine {
				b, err = br.ReadSlice('\n')
				full = append(full, b...)
			}
			if len(full) > maxLine {
				return broken(n, "line longer than %d bytes: not a record", maxLine)
			}
			b = full
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return s, err
		}
		if len(b) == 0 && errors.Is(err, io.EOF) {
			break
		}
		if b[len(b)-1] != '\n' {
			return broken(n, "incomplete line (no newline at the end of the file): a write was cut short or the file was truncated")
		}
		b = b[:len(b)-1]
		var h header
		if jerr := json.Unmarshal(b, &h); jerr != nil || h.Seq == nil || h.Type == "" {
			return broken(n, "not an audit record (damaged, or a cut line followed by another)")
		}
		if h.V != Version {
			return broken(n, "record version %d: this phiproxy reads version %d", h.V, Version)
		}
		if !isHash(h.Prev) {
			return broken(n, "prev is not a SHA-256 hash")
		}
		seq := *h.Seq
		switch {
		case h.Type == TypeStart:
			if !isHash(h.Seed) || h.Prev != h.Seed {
				return broken(n, "start record whose prev is not its seed")
			}
			if h.Continues != "" && !isHash(h.Continues) {
				return broken(n, "start record whose continues is not a SHA-256 hash")
			}
			switch {
			case n > 1 && h.Continues != lastHash:
				return broken(n, "a new segment that does not continue line %d: lines before it were removed or altered", n-1)
			case n == 1 && prev != nil && h.Continues != prev.Hash:
				return broken(n, "does not continue the previous file (its last record, seq %d, has hash %.16s…; this file continues %.16s…)", prev.Seq, prev.Hash, h.Continues)
			case n == 1:
				s.Continues = h.Continues
			}
			s.Segments++
		case n == 1:
			return broken(n, "the file does not begin with a start record: its beginning is missing")
		case h.Prev != lastHash:
			if seq != lastSeq+1 {
				return broken(n, "records are missing before this line (seq goes from %d to %d)", lastSeq, seq)
			}
			return broken(n, "prev does not match the hash of line %d: line %d (or this line's prev) was altered", n-1, n-1)
		case seq != lastSeq+1:
			return broken(n, "seq goes from %d to %d", lastSeq, seq)
		}
		lastHash, lastSeq = lineHash(b), seq
		s.Records++
		s.Head = Head{Seq: lastSeq, Hash: lastHash}
		if errors.Is(err, io.EOF) {
			break
		}
	}
	if s.Records == 0 {
		return s, &ChainError{Name: name, Line: 1, Msg: "empty: no start record"}
	}
	return s, nil
}

func isHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && bytes.Equal([]byte(s), bytes.ToLower([]byte(s)))
}
