// Package leakcheck searches what a PostgreSQL cluster wrote (its server
// log, every file under its data directory) and any extra texts, such as a
// proxy's log, for plaintext PHI values that tests sent through phiproxy.
// The tests run the server with log_statement = all, so a value that
// reached PostgreSQL in the clear shows up in the log, and after a
// CHECKPOINT in the table, index and WAL files.
//
// Each value is searched as its raw bytes and as the hex of its bytes (the
// bytea output form); base64 would look like ciphertext, so it is not
// searched. Values shorter than MinLength bytes are ignored: they occur in
// any data directory by chance.
package leakcheck

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/novamind/phiproxy/internal/pgcluster"
)

// MinLength is the shortest value searched, in bytes.
const MinLength = 4

// Finder searches texts for a set of values in one pass per text. It is
// not safe for concurrent use.
type Finder struct {
	// byPrefix maps the first 4 bytes of each needle to the needles with
	// that prefix, so a text is scanned once whatever the number of values.
	byPrefix map[uint32][]needle
	found    map[string]map[string]bool // value -> places
}

// needle is one searched form of a value.
type needle struct {
	b     []byte
	value string
}

// New returns a Finder for vals (duplicates and values shorter than
// MinLength are ignored).
func New(vals []string) *Finder {
	f := &Finder{byPrefix: map[uint32][]needle{}, found: map[string]map[string]bool{}}
	seen := map[string]bool{}
	for _, v := range vals {
		if len(v) < MinLength || seen[v] {
			continue
		}
		seen[v] = true
		for _, b := range [][]byte{[]byte(v), []byte(hex.EncodeToString([]byte(v)))} {
			k := binary.LittleEndian.Uint32(b)
			f.byPrefix[k] = append(f.byPrefix[k], needle{b: b, value: v})
		}
	}
	return f
}

// Search records each value found in text, naming it place.
func (f *Finder) Search(place string, text []byte) {
	if len(f.byPrefix) == 0 {
		return
	}
	for i := 0; i+MinLength <= len(text); i++ {
		ns, ok := f.byPrefix[binary.LittleEndian.Uint32(text[i:])]
		if !ok {
			continue
		}
		for _, n := range ns {
			if bytes.HasPrefix(text[i:], n.b) {
				if f.found[n.value] == nil {
					f.found[n.value] = map[string]bool{}
				}
				f.found[n.value][place] = true
			}
		}
	}
}

// SearchCluster searches c's server log and every file under its data
// directory. Run a CHECKPOINT first so that the table files are written.
func (f *Finder) SearchCluster(c *pgcluster.Cluster) error {
	log, err := c.LogContents()
	if err != nil {
		return err
	}
	f.Search("server log", log)
	return filepath.WalkDir(c.DataDir(), func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed by the running server since it was listed
		}
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			// The server removes some files while it runs (a relation
			// cache init file after catalog changes, a temporary file):
			// gone, it holds nothing.
			return nil
		}
		if err != nil {
			return err
		}
		f.Search(strings.TrimPrefix(path, c.DataDir()), b)
		return nil
	})
}

// Found returns "value in place" for each hit, sorted.
func (f *Finder) Found() []string {
	var out []string
	for v, places := range f.found {
		for p := range places {
			out = append(out, fmt.Sprintf("%q in %s", v, p))
		}
	}
	sort.Strings(out)
	return out
}

// FoundValues returns each value found, sorted.
func (f *Finder) FoundValues() []string {
	out := make([]string, 0, len(f.found))
	for v := range f.found {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// Places returns where v was found, sorted.
func (f *Finder) Places(v string) []string {
	out := make([]string, 0, len(f.found[v]))
	for p := range f.found[v] {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}
