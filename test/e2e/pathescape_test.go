package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// Restores from images rewritten to name paths the restore must not
// follow: each starts from a real dump (copied without the checksum
// manifest, as criu's images come, so the path checks are what refuse
// them), must fail naming what and where, create nothing outside, and
// leave no task behind.

// renameReg rewrites the regular-file entries of files.img whose name
// ends with suffix to name, and fails unless there was one.
func renameReg(t *testing.T, dir, suffix, name string) {
	t.Helper()
	n := 0
	editFiles(t, dir, func(fe *fdinfo.FileEntry) {
		if rf := fe.GetReg(); rf != nil && strings.HasSuffix(rf.GetName(), suffix) {
			rf.Name = &name
			n++
		}
	})
	if n == 0 {
		t.Fatalf("no regular-file entry of %s/files.img ends with %s", dir, suffix)
	}
}

// renameUnix rewrites the bind path of the unix socket bound to old.
func renameUnix(t *testing.T, dir, old, name string) {
	t.Helper()
	n := 0
	editFiles(t, dir, func(fe *fdinfo.FileEntry) {
		if ue := fe.GetUsk(); ue != nil && strings.TrimRight(string(ue.GetName()), "\x00") == old {
			ue.Name = []byte(name)
			n++
		}
	})
	if n == 0 {
		t.Fatalf("no unix socket of %s/files.img is bound to %s", dir, old)
	}
}

// assertNothingAt fails if a file matching pattern exists.
func assertNothingAt(t *testing.T, pattern string) {
	t.Helper()
	m, _ := filepath.Glob(pattern)
	for _, p := range m {
		t.Errorf("the restore created %s", p)
		os.RemoveAll(p)
	}
}

// symlinkedDir makes DIR/outside and DIR/evil, a symbolic link to it: a
// path through evil leads where the dump never went.
func symlinkedDir(t *testing.T) (evil, outside string) {
	t.Helper()
	base := t.TempDir()
	outside = filepath.Join(base, "outside")
	evil = filepath.Join(base, "evil")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, evil); err != nil {
		t.Fatal(err)
	}
	return evil, outside
}

// assertEmpty fails unless dir holds nothing.
func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		t.Errorf("the restore created %s in %s", e.Name(), dir)
	}
}

// TestRestorePathEscape: regular files, ghost files, link remaps, FIFOs
// and unix socket bind paths rewritten to climb out with "..", to be
// relative, or to go through a symbolic link are refused. The untouched
// dumps then restore, so the refusals came from the rewrites.
func TestRestorePathEscape(t *testing.T) {
	testutil.RequireRoot(t)
	tag := "stasis-escape-" + strconv.Itoa(os.Getpid())

	t.Run("ghost", func(t *testing.T) {
		work := t.TempDir()
		v := testutil.StartVictim(t, "ghost", work, "small")
		v.WaitReady(t)
		good := t.TempDir()
		testutil.Dump(t, v.Pid, good)
		v.Reap(t)

		t.Run("dotdot", func(t *testing.T) {
			dir := copyDir(t, good, isCriuFile)
			renameReg(t, dir, "/small.txt", work+strings.Repeat("/..", 20)+"/etc/"+tag+".txt")
			msg := testutil.RestoreFail(t, dir)
			testutil.AssertContains(t, msg, "files.img", "offset", `".." component`, "unsafe path")
			testutil.AssertNoTask(t, v.Pid)
			assertNothingAt(t, "/etc/"+tag+"*")
		})
		t.Run("relative", func(t *testing.T) {
			dir := copyDir(t, good, isCriuFile)
			renameReg(t, dir, "/small.txt", tag+".txt")
			msg := testutil.RestoreFail(t, dir)
			testutil.AssertContains(t, msg, "files.img", "offset", "is relative", "unsafe path")
			testutil.AssertNoTask(t, v.Pid)
			assertNothingAt(t, tag+"*")
		})
		t.Run("symlink", func(t *testing.T) {
			// The ghost is made beside its name: through evil, in outside.
			dir := copyDir(t, good, isCriuFile)
			evil, outside := symlinkedDir(t)
			renameReg(t, dir, "/small.txt", filepath.Join(evil, "small.txt"))
			msg := testutil.RestoreFail(t, dir)
			testutil.AssertContains(t, msg, "small.txt", "symbolic link", "unsafe path")
			testutil.AssertNoTask(t, v.Pid)
			assertEmpty(t, outside)
		})
		testutil.RestoreDetached(t, copyDir(t, good, isCriuFile), v)
		noLeftovers(t, work)
		v.TermAndCheck(t)
	})

	t.Run("link-remap", func(t *testing.T) {
		// A link remap file is removed once the restore succeeded: an
		// entry naming any other file would have the restore remove it.
		work := t.TempDir()
		v := testutil.StartVictim(t, "ghost", work, "linked")
		v.WaitReady(t)
		good := t.TempDir()
		testutil.Dump(t, v.Pid, good, "--link-remap")
		v.Reap(t)
		canary := filepath.Join(t.TempDir(), "precious")
		if err := os.WriteFile(canary, []byte("keep me\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		dir := copyDir(t, good, isCriuFile)
		renameReg(t, dir, "/link_remap.1", canary)
		msg := testutil.RestoreFail(t, dir)
		testutil.AssertContains(t, msg, canary, "link_remap.N", "unsafe path")
		testutil.AssertNoTask(t, v.Pid)
		if b, err := os.ReadFile(canary); err != nil || string(b) != "keep me\n" {
			t.Errorf("%s after the refused restore: %q, %v", canary, b, err)
		}
		testutil.RestoreDetached(t, copyDir(t, good, isCriuFile), v)
		v.TermAndCheck(t)
	})

	t.Run("fifo", func(t *testing.T) {
		work := t.TempDir()
		v := testutil.StartVictim(t, "fifo", work)
		v.WaitReady(t)
		good := t.TempDir()
		testutil.Dump(t, v.Pid, good)
		v.Reap(t)
		dir := copyDir(t, good, isCriuFile)
		renameReg(t, dir, "/f1", "../"+tag)
		msg := testutil.RestoreFail(t, dir)
		testutil.AssertContains(t, msg, "files.img", "offset", "is relative", "unsafe path")
		testutil.AssertNoTask(t, v.Pid)
		assertNothingAt(t, "../"+tag+"*")
		testutil.RestoreDetached(t, copyDir(t, good, isCriuFile), v)
		v.TermAndCheck(t)
	})

	t.Run("unix", func(t *testing.T) {
		sockDir := t.TempDir()
		v := testutil.StartVictim(t, "unixsk", "all", sockDir)
		v.WaitReady(t)
		ts := testutil.TrackTree(t, v.Pid)
		good := t.TempDir()
		testutil.Dump(t, v.Pid, good)
		v.Reap(t)
		testutil.ReapTasks(t, testutil.Pids(ts[1:]))
		listen := filepath.Join(sockDir, "listen.sock")

		t.Run("dotdot", func(t *testing.T) {
			dir := copyDir(t, good, isCriuFile)
			renameUnix(t, dir, listen, sockDir+strings.Repeat("/..", 20)+"/"+tag+".sock")
			msg := testutil.RestoreFail(t, dir)
			testutil.AssertContains(t, msg, "files.img", "offset", "unix socket", `".." component`)
			testutil.AssertNoTask(t, v.Pid)
			assertNothingAt(t, "/"+tag+"*")
		})
		t.Run("relative-no-dir", func(t *testing.T) {
			dir := copyDir(t, good, isCriuFile)
			renameUnix(t, dir, listen, tag+".sock")
			msg := testutil.RestoreFail(t, dir)
			testutil.AssertContains(t, msg, "files.img", "offset", "unix socket directory", "unsafe path")
			testutil.AssertNoTask(t, v.Pid)
			assertNothingAt(t, tag+"*")
		})
		t.Run("symlink", func(t *testing.T) {
			dir := copyDir(t, good, isCriuFile)
			evil, outside := symlinkedDir(t)
			renameUnix(t, dir, listen, filepath.Join(evil, "listen.sock"))
			msg := testutil.RestoreFail(t, dir)
			testutil.AssertContains(t, msg, "listen.sock", "symbolic link", "unsafe path")
			testutil.AssertNoTask(t, v.Pid)
			assertEmpty(t, outside)
		})
		testutil.RestoreDetached(t, copyDir(t, good, isCriuFile), v)
		v.TermAndCheck(t)
	})
}
