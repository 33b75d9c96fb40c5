package leakcheck

import (
	"encoding/hex"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFinder(t *testing.T) {
	f := New([]string{"ada.quill@example.org", "900-12-3456", "abc", "900-12-3456"})
	f.Search("log", []byte("LOG: statement: SELECT 'ada.quill@example.org' abc"))
	f.Search("base/1/2", []byte("\x00\x01"+hex.EncodeToString([]byte("900-12-3456"))+"\x00"))
	f.Search("wal", []byte("900-12-345 ada.quill@example.or"))
	f.Search("short", []byte("ab"))
	want := []string{
		`"900-12-3456" in base/1/2`,
		`"ada.quill@example.org" in log`,
	}
	if diff := cmp.Diff(want, f.Found()); diff != "" {
		t.Errorf("Found (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"900-12-3456", "ada.quill@example.org"}, f.FoundValues()); diff != "" {
		t.Errorf("FoundValues (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"log"}, f.Places("ada.quill@example.org")); diff != "" {
		t.Errorf("Places (-want +got):\n%s", diff)
	}
}

func TestFinderEmpty(t *testing.T) {
	f := New(nil)
	f.Search("log", []byte("anything at all"))
	if got := f.Found(); len(got) != 0 {
		t.Errorf("Found = %v, want none", got)
	}
}
