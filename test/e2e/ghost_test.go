package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// Unlinked-but-open files (ghost.c): their content travels in
// ghost-file-N.img and they come back with no name.

// imagesSize is the disk usage of the files of dir matching pattern.
func imagesSize(t *testing.T, dir, pattern string) (n int, bytes int64) {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(dir, pattern))
	for _, p := range names {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		bytes += fi.Size()
	}
	return len(names), bytes
}

// noLeftovers fails if the restore left a ghost or link file in dir.
func noLeftovers(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".ghost") || strings.HasPrefix(e.Name(), "link_remap.") || strings.HasSuffix(e.Name(), ".cr_link") {
			t.Errorf("%s left behind in %s", e.Name(), dir)
		}
	}
}

// TestGhostFiles: an unlinked file open twice (one ghost, offsets kept,
// still one inode), an O_TMPFILE file, a sparse 1 GiB unlinked file with 4
// written blocks (only those are copied) and a deleted file mapped shared
// and private come back unlinked (st_nlink 0, "(deleted)") with their
// content.
func TestGhostFiles(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	work := t.TempDir()
	v := testutil.StartVictim(t, "ghost", work, "small", "sparse", "mmap")
	v.WaitReady(t)
	dir := t.TempDir()
	r := testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	n, size := imagesSize(t, dir, "ghost-file-*.img")
	t.Logf("ghost images: %d files, %d bytes (1 GiB sparse file with 4 blocks, 10000 + 9 + 64 KiB others); dump took %v", n, size, r.Took.Round(time.Millisecond))
	if n != 4 {
		t.Errorf("%d ghost images, want 4 (small.txt shared by 2 fds, O_TMPFILE, sparse.bin, map.bin shared by 2 mappings)", n)
	}
	if size > 256<<10 {
		t.Errorf("ghost images hold %d bytes: the holes of the sparse file were copied", size)
	}
	if _, err := os.Stat(filepath.Join(dir, "remap-fpath.img")); err != nil {
		t.Error(err)
	}
	testutil.CheckImages(t, dir)
	testutil.RestoreDetached(t, dir, v)
	noLeftovers(t, work)
	v.TermAndCheck(t)
}

// TestGhostDeletedExe: a program whose binary was deleted while it runs
// (as when a package upgrade replaces it), and a child it forked, are
// dumped with the binary as one ghost, and /proc/self/exe says
// "(deleted)" again in both after the restore.
func TestGhostDeletedExe(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	work := t.TempDir()
	prog := filepath.Join(work, "ghost-prog")
	copyExecutable(t, testutil.BuildVictim(t, "ghost"), prog, 0o755)
	ready := filepath.Join(t.TempDir(), "ready")
	v := testutil.StartProgram(t, prog, ready, work, "exe")
	v.Ready = ready
	v.WaitReady(t)
	children := testutil.Pids(testutil.MustTree(t, v.Pid))[1:]
	testutil.Track(t, children)
	if err := os.Remove(prog); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	testutil.ReapTasks(t, children)
	if n, _ := imagesSize(t, dir, "ghost-file-*.img"); n != 1 {
		t.Errorf("%d ghost images, want 1 (the binary, shared by the exe link and its mappings)", n)
	}
	testutil.CheckImages(t, dir)
	testutil.RestoreDetached(t, dir, v)
	noLeftovers(t, work)
	v.TermAndCheck(t)
}

// TestLinkRemap: a file unlinked by the name it was opened by but still
// linked elsewhere. Without --link-remap, a name of it in the same
// directory is found and the file is reopened by that name (the fd now
// shows other.txt); the victim's fd still writes into the same inode.
// With --link-remap, as in criu, the file is linked again as link_remap.N
// at dump time and reopened under its old name, unlinked again. An
// O_TMPFILE file is linked too; an unlinked file with no name left falls
// back to a ghost. The links are gone after the restore.
func TestLinkRemap(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	t.Run("other-name", func(t *testing.T) {
		work := t.TempDir()
		v := testutil.StartVictim(t, "ghost", work, "linked")
		v.WaitReady(t)
		dir := t.TempDir()
		testutil.Dump(t, v.Pid, dir)
		v.Reap(t)
		testutil.CheckImages(t, dir)
		if n, _ := imagesSize(t, dir, "ghost-file-*.img"); n != 0 {
			t.Errorf("%d ghost images, want none: orig.txt is other.txt", n)
		}
		testutil.RestoreDetached(t, dir, v)
		if got := fdTargets(t, v.Pid); !slices.Contains(got, filepath.Join(work, "other.txt")) {
			t.Errorf("the restored fds are %q, want one on other.txt", got)
		}
		noLeftovers(t, work)
		v.TermAndCheck(t)
	})
	t.Run("link-remap", func(t *testing.T) {
		work := t.TempDir()
		v := testutil.StartVictim(t, "ghost", work, "linked", "small")
		v.WaitReady(t)
		dir := t.TempDir()
		testutil.Dump(t, v.Pid, dir, "--link-remap")
		v.Reap(t)
		links, _ := filepath.Glob(filepath.Join(work, "link_remap.*"))
		if len(links) != 2 {
			t.Errorf("link remaps %v, want 2 (orig.txt and the O_TMPFILE file)", links)
		}
		if n, _ := imagesSize(t, dir, "ghost-file-*.img"); n != 1 {
			t.Errorf("%d ghost images, want 1 (small.txt has no name to link from)", n)
		}
		testutil.CheckImages(t, dir)
		testutil.RestoreDetached(t, dir, v)
		if got := fdTargets(t, v.Pid); !slices.Contains(got, filepath.Join(work, "orig.txt")+" (deleted)") {
			t.Errorf("the restored fds are %q, want one on orig.txt (deleted)", got)
		}
		noLeftovers(t, work)
		v.TermAndCheck(t)
	})
	t.Run("elsewhere", func(t *testing.T) {
		// The other name is in another directory: not searched, so the
		// dump asks for --link-remap and leaves the victim running.
		work := t.TempDir()
		v := testutil.StartVictim(t, "ghost", work, "linked")
		v.WaitReady(t)
		other := filepath.Join(t.TempDir(), "moved.txt")
		if err := os.Rename(filepath.Join(work, "other.txt"), other); err != nil {
			t.Fatal(err)
		}
		msg := testutil.DumpFail(t, v.Pid, t.TempDir())
		testutil.AssertContains(t, msg, "orig.txt", "other link", "--link-remap")
		testutil.AssertRunning(t, v.Pid)
		if err := os.Rename(other, filepath.Join(work, "other.txt")); err != nil {
			t.Fatal(err)
		}
		v.TermAndCheck(t)
	})
}

// fdTargets returns the targets of pid's fds.
func fdTargets(t *testing.T, pid int) []string {
	t.Helper()
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(fdDir, e.Name())); err == nil {
			out = append(out, l)
		}
	}
	return out
}

// TestGhostLimit: a 2 MiB unlinked file over --ghost-limit 1M fails the
// dump with an error naming the file, its size and the limit; the victim
// goes on untouched.
func TestGhostLimit(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	work := t.TempDir()
	v := testutil.StartVictim(t, "ghost", work, "big")
	v.WaitReady(t)
	dir := t.TempDir()
	msg := testutil.DumpFail(t, v.Pid, dir, "--ghost-limit", "1M")
	testutil.AssertContains(t, msg, "big.bin", "2097152 bytes", "1048576 bytes", "--ghost-limit", "--link-remap")
	testutil.AssertRunning(t, v.Pid)
	if n, _ := imagesSize(t, dir, "ghost-file-*.img"); n != 0 {
		t.Errorf("a failed dump left %d ghost images", n)
	}
	v.TermAndCheck(t)
}
