package e2e

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestRegFileFlags: O_DIRECT (still a direct read), O_NOATIME,
// O_APPEND|O_NONBLOCK and O_CLOEXEC keep their F_GETFL/F_GETFD values; fds
// of /proc/self/status and /sys/kernel/mm/transparent_hugepage/enabled
// reopen with their flags and read the same; a directory fd half read with
// getdents64 goes on where it was (ghost.c flags, procsys, dirfd).
func TestRegFileFlags(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	work := t.TempDir()
	v := testutil.StartVictim(t, "ghost", work, "flags", "procsys", "dirfd")
	v.WaitReady(t)
	testutil.DumpRestore(t, v)
	v.TermAndCheck(t)
}

// TestFileChangedSize: a file that grew between dump and restore is
// refused at restore, with the file, the dumped and the current size named
// and no task left; once the file is back as it was, the same images
// restore and the victim finds everything.
func TestFileChangedSize(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	work := t.TempDir()
	v := testutil.StartVictim(t, "ghost", work, "flags")
	v.WaitReady(t)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)

	p := filepath.Join(work, "size.txt")
	orig, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, append(orig, "changed!"...), 0o640); err != nil {
		t.Fatal(err)
	}
	msg := testutil.RestoreFail(t, dir)
	testutil.AssertContains(t, msg, "size.txt", "8200 bytes now", "8192 bytes when dumped")
	testutil.AssertNoTask(t, v.Pid)

	if err := os.Truncate(p, int64(len(orig))); err != nil {
		t.Fatal(err)
	}
	testutil.RestoreDetached(t, dir, v)
	v.TermAndCheck(t)
}
