package e2e

import (
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/memfd"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestMemfd: fds on memfds come back with their name, size, content and
// holes, mode and owner, seals (GROW|SHRINK, WRITE|SHRINK|SEAL,
// FUTURE_WRITE on a memfd mapped writable before the seal, SEAL alone),
// flags and offsets (a dup shares one, a read-only reopen has its own),
// and each memfd's fd and mapping are still one memfd (memfd.c checks all
// of it from the inside, sealed operations included).
func TestMemfd(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v := testutil.StartVictim(t, "memfd")
	v.WaitReady(t)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	testutil.CheckImages(t, dir)

	// One inode entry per memfd, whether it is seen through fds, mappings
	// or both; one file entry per open file description or mapping mode.
	inodes := testutil.ReadImage(t, dir, "memfd.img", func() *memfd.MemfdInodeEntry { return &memfd.MemfdInodeEntry{} })
	seals := map[string]uint32{}
	for _, in := range inodes {
		seals[in.GetName()] = in.GetSeals()
	}
	want := map[string]uint32{"victim-a": 0x6, "victim-b": 0xb, "victim-c": 0x10, "victim-d": 0x1}
	if len(inodes) != len(want) {
		t.Errorf("memfd.img has %d inodes %v, want %d", len(inodes), seals, len(want))
	}
	for name, s := range want {
		if got, ok := seals[name]; !ok || got != s {
			t.Errorf("memfd.img: %s seals %#x (present %v), want %#x", name, got, ok, s)
		}
	}
	files := testutil.ReadImage(t, dir, "files.img", func() *fdinfo.FileEntry { return &fdinfo.FileEntry{} })
	n := 0
	for _, f := range files {
		if f.GetType() == fdinfo.FdTypes_MEMFD {
			n++
		}
	}
	// fds 50 (and its dup 51), 52, 53, 54, 55; mappings of A, B (read-only), C.
	if n != 8 {
		t.Errorf("files.img has %d memfd entries, want 8", n)
	}

	testutil.RestoreDetached(t, dir, v)
	v.TermAndCheck(t)
}
