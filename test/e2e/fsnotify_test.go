package e2e

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestInotify: two inotify fds keep their watches (files and a directory,
// different masks, IN_ONESHOT, wds with gaps), their flags and close-on-exec;
// after the restore the victim changes the watched files itself and must
// read exactly the expected events with the dumped wds (inotify.c).
func TestInotify(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v := testutil.StartVictim(t, "inotify", t.TempDir())
	v.WaitReady(t)
	testutil.DumpRestore(t, v)
	v.TermAndCheck(t)
}

// TestFanotify: a fanotify group keeps its flags, an inode mark, a mount
// mark and an ignore-only mark; after the restore the victim's own writes
// and reads must give events with its pid and an fd on the right file, and
// none for the ignored file (fanotify.c).
func TestFanotify(t *testing.T) {
	testutil.RequireRoot(t)
	mnt := fanotifyMount(t)
	v := testutil.StartVictim(t, "fanotify", t.TempDir(), mnt)
	v.WaitReady(t)
	testutil.DumpRestore(t, v)
	v.TermAndCheck(t)
}

// TestInotifyWatchedFileGone: a watched file removed between dump and
// restore fails the restore, naming the file; nothing is left behind.
func TestInotifyWatchedFileGone(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	work := t.TempDir()
	v := testutil.StartVictim(t, "inotify", work)
	v.WaitReady(t)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	if err := os.Remove(filepath.Join(work, "b.txt")); err != nil {
		t.Fatal(err)
	}
	msg := testutil.RestoreFail(t, dir)
	testutil.AssertContains(t, msg, "inotify", "watch 5", filepath.Join(work, "b.txt"), "gone")
	testutil.AssertNoTask(t, v.Pid)
}

// TestFanotifyMountGone: a mount mark whose mount was unmounted between dump
// and restore fails the restore, naming the mount point: a mark put on the
// directory left there would watch the whole mount holding it.
func TestFanotifyMountGone(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	mnt := fanotifyMount(t)
	v := testutil.StartVictim(t, "fanotify", t.TempDir(), mnt)
	v.WaitReady(t)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	// The ignore mark on ign.txt falls back to this new file by its path;
	// the mount mark must then find no mount at mnt.
	if err := os.WriteFile(filepath.Join(mnt, "ign.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	msg := testutil.RestoreFail(t, dir)
	testutil.AssertContains(t, msg, "fanotify", "mount mark on "+mnt, "not a mount point")
	testutil.AssertNoTask(t, v.Pid)
}

// TestFanotifyRefused: marks stasis cannot restore (a filesystem mark, which
// criu's images cannot hold; permission events, which the frozen listener
// could not answer) fail the dump with a clear error and leave the victim
// running untouched.
func TestFanotifyRefused(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	for _, c := range []struct{ mode, want string }{
		{"fs", "FAN_MARK_FILESYSTEM"},
		{"perm", "permission events"},
	} {
		t.Run(c.mode, func(t *testing.T) {
			mnt := fanotifyMount(t)
			v := testutil.StartVictim(t, "fanotify", t.TempDir(), mnt, c.mode)
			v.WaitReady(t)
			msg := testutil.DumpFail(t, v.Pid, t.TempDir())
			testutil.AssertContains(t, msg, c.want, "fanotify", "not supported")
			assertNamesPID(t, msg, v.Pid)
			testutil.AssertRunning(t, v.Pid)
			v.TermAndCheck(t)
		})
	}
}

// TestFsnotifyVictims runs both victims without a dump (they must pass),
// then with a watch or mark removed behind their back through a copy of
// their fd (they must notice): a victim that cannot fail proves nothing.
func TestFsnotifyVictims(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	t.Run("inotify", func(t *testing.T) {
		v := testutil.StartVictim(t, "inotify", t.TempDir())
		v.WaitReady(t)
		v.TermAndCheck(t)
	})
	t.Run("fanotify", func(t *testing.T) {
		v := testutil.StartVictim(t, "fanotify", t.TempDir(), fanotifyMount(t))
		v.WaitReady(t)
		v.TermAndCheck(t)
	})
	t.Run("inotify-watch-lost", func(t *testing.T) {
		v := testutil.StartVictim(t, "inotify", t.TempDir())
		v.WaitReady(t)
		fd := stealFd(t, v.Pid, 40)
		if _, err := unix.InotifyRmWatch(fd, 4); err != nil {
			t.Fatal(err)
		}
		expectDetected(t, v, "FAIL: events queued before any change", "FAIL: fd 40: event 0 is wd 4 mask 0x8000")
	})
	t.Run("fanotify-mount-mark-lost", func(t *testing.T) {
		mnt := fanotifyMount(t)
		v := testutil.StartVictim(t, "fanotify", t.TempDir(), mnt)
		v.WaitReady(t)
		fd := stealFd(t, v.Pid, 40)
		if err := unix.FanotifyMark(fd, unix.FAN_MARK_REMOVE|unix.FAN_MARK_MOUNT, unix.FAN_OPEN|unix.FAN_CLOSE_NOWRITE, unix.AT_FDCWD, mnt); err != nil {
			t.Fatal(err)
		}
		expectDetected(t, v, "FAIL: events on m.txt (mount mark): mask 0")
	})
	t.Run("fanotify-ignore-lost", func(t *testing.T) {
		mnt := fanotifyMount(t)
		v := testutil.StartVictim(t, "fanotify", t.TempDir(), mnt)
		v.WaitReady(t)
		fd := stealFd(t, v.Pid, 40)
		// Inode marks only: the mount mark stays and now reports ign.txt.
		if err := unix.FanotifyMark(fd, unix.FAN_MARK_FLUSH, 0, unix.AT_FDCWD, ""); err != nil {
			t.Fatal(err)
		}
		expectDetected(t, v, "ign.txt", "FAIL: events on f.txt (inode mark): mask 0")
	})
}

// fanotifyMount mounts a small tmpfs of the test's own, so that a mount
// mark sees only its victim; it is unmounted (lazily) at the end.
func fanotifyMount(t *testing.T) string {
	t.Helper()
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", mnt, err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	return mnt
}

// stealFd returns a copy of fd of pid (the same open file description).
func stealFd(t *testing.T, pid, fd int) int {
	t.Helper()
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	cp, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		t.Fatalf("pidfd_getfd fd %d of pid %d: %v", fd, pid, err)
	}
	t.Cleanup(func() { unix.Close(cp) })
	return cp
}
