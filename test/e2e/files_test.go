package e2e

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestFiles: regular files open O_RDONLY, O_WRONLY (with a dup sharing the
// offset), O_RDWR and O_APPEND keep their flags and offsets and go on
// reading and writing the right bytes; a MAP_PRIVATE file mapping keeps its
// changed page; a MAP_SHARED mapping written after the restore reaches the
// file (files.c), which the test reads back.
func TestFiles(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	work := t.TempDir()
	v := testutil.StartVictim(t, "files", work)
	v.WaitReady(t)
	testutil.DumpRestore(t, v)
	v.TermAndCheck(t)

	m, err := os.ReadFile(filepath.Join(work, "m.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 64*1024 {
		t.Fatalf("m.bin is %d bytes, want 65536", len(m))
	}
	if got := string(m[8192 : 8192+16]); got != "restored marker\n" {
		t.Errorf("the write to the MAP_SHARED mapping after restore did not reach m.bin: %q at 8192", got)
	}
	for i := range m {
		if i >= 8192 && i < 8192+16 {
			continue
		}
		if want := byte(i*31 + i/4096 + 11); m[i] != want {
			t.Errorf("m.bin byte %d is %#x, want %#x", i, m[i], want)
			break
		}
	}
	if a, _ := os.ReadFile(filepath.Join(work, "a.txt")); string(a) != "before\nmid\nafter\n" {
		t.Errorf("a.txt holds %q", a)
	}
}
