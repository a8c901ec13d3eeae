package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	filelock "github.com/checkpoint-restore/go-criu/v8/crit/images/file-lock"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// The locks victim (test/victims/locks.c) holds an flock LOCK_EX, an flock
// LOCK_SH, a POSIX read lock on bytes 0-99 and a write lock on 4096-EOF,
// and an OFD write lock on bytes 10-19 (through two fds), on files of its
// work dir. These tests check its locks from outside: the test process
// is another process with its own open files, so each of them must be
// refused by the victim's locks. It takes no POSIX lock of its own on
// these files, except in TestFileLocksRestoreConflict, where it must.

// lockProblems lists the locks of the victim pid that another process
// does not see; nil if all are held.
func lockProblems(t *testing.T, dir string, pid int) []string {
	t.Helper()
	var out []string
	open := func(name string) *os.File {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	for _, c := range []struct {
		name   string
		shared bool
	}{{"flock-ex", false}, {"flock-sh", true}} {
		f := open(c.name)
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
			out = append(out, fmt.Sprintf("%s: another process's flock(LOCK_EX|LOCK_NB) gave %v, want EWOULDBLOCK", c.name, err))
		}
		err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
		if c.shared && err != nil {
			out = append(out, fmt.Sprintf("%s: the LOCK_SH lock is not shared: %v", c.name, err))
		} else if !c.shared && !errors.Is(err, unix.EWOULDBLOCK) {
			out = append(out, fmt.Sprintf("%s: another process's flock(LOCK_SH|LOCK_NB) gave %v, want EWOULDBLOCK", c.name, err))
		}
		f.Close()
	}
	getlk := func(f *os.File, cmd int, typ int16, start, length int64) unix.Flock_t {
		fl := unix.Flock_t{Type: typ, Whence: unix.SEEK_SET, Start: start, Len: length}
		if err := unix.FcntlFlock(f.Fd(), cmd, &fl); err != nil {
			t.Fatalf("fcntl get lock: %v", err)
		}
		return fl
	}
	f := open("posix")
	if fl := getlk(f, unix.F_GETLK, unix.F_WRLCK, 0, 100); fl.Type != unix.F_RDLCK || int(fl.Pid) != pid || fl.Start != 0 || fl.Len != 100 {
		out = append(out, fmt.Sprintf("posix: bytes 0-99: %+v, want a read lock of pid %d", fl, pid))
	}
	if fl := getlk(f, unix.F_GETLK, unix.F_WRLCK, 100, 900); fl.Type != unix.F_UNLCK {
		out = append(out, fmt.Sprintf("posix: bytes 100-999 are locked: %+v", fl))
	}
	if fl := getlk(f, unix.F_GETLK, unix.F_RDLCK, 1<<40, 1); fl.Type != unix.F_WRLCK || int(fl.Pid) != pid || fl.Start != 4096 || fl.Len != 0 {
		out = append(out, fmt.Sprintf("posix: byte 2^40: %+v, want the write lock 4096-EOF of pid %d", fl, pid))
	}
	f.Close()
	f = open("ofd")
	if fl := getlk(f, unix.F_OFD_GETLK, unix.F_RDLCK, 0, 0); fl.Type != unix.F_WRLCK || fl.Pid != -1 || fl.Start != 10 || fl.Len != 10 {
		out = append(out, fmt.Sprintf("ofd: %+v, want an OFD write lock on bytes 10-19", fl))
	}
	f.Close()
	return out
}

func requireLocksHeld(t *testing.T, dir string, pid int, when string) {
	t.Helper()
	for _, p := range lockProblems(t, dir, pid) {
		t.Errorf("%s: %s", when, p)
	}
}

func startLocks(t *testing.T) (*testutil.Victim, string) {
	testutil.RequireRoot(t)
	work := t.TempDir()
	v := testutil.StartVictim(t, "locks", work)
	v.WaitReady(t)
	requireLocksHeld(t, work, v.Pid, "before the dump")
	return v, work
}

// TestFileLocks: with -l, every lock comes back to its holder: seen from
// outside by another process, and from inside by the victim.
func TestFileLocks(t *testing.T) {
	t.Parallel()
	v, work := startLocks(t)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir, "-l")
	v.Reap(t)
	testutil.CheckImages(t, dir)
	checkLockImage(t, dir, v.Pid)
	testutil.RestoreDetached(t, dir, v, "--file-locks")
	requireLocksHeld(t, work, v.Pid, "after the restore")
	v.TermAndCheck(t)
}

// checkLockImage: filelocks.img holds each lock once (the OFD lock shows
// on two fds) as criu writes it: flag, type, holder, fd, start, len.
func checkLockImage(t *testing.T, dir string, pid int) {
	t.Helper()
	got := lockEntries(t, dir)
	var want []string
	for _, w := range []string{
		"flag 2 type 1 pid %d fd 50 start 0 len 0",    // flock LOCK_EX
		"flag 2 type 0 pid %d fd 51 start 0 len 0",    // flock LOCK_SH
		"flag 1 type 0 pid %d fd 52 start 0 len 100",  // POSIX read
		"flag 1 type 1 pid %d fd 52 start 4096 len 0", // POSIX write to EOF
		"flag 4 type 1 pid %d fd 53 start 10 len 10",  // OFD write
	} {
		want = append(want, fmt.Sprintf(w, pid))
	}
	sort.Strings(want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("filelocks.img:\n got %q\nwant %q", got, want)
	}
}

// TestFileLocksTree: locks go back to their holders in a tree. The child
// shares the parent's flock (one entry, the parent's) and holds its own
// POSIX lock, which must be the child's again (F_GETLK names its pid); it
// was blocked in F_SETLKW for a lock the parent refuses, and after the
// restore it waits again (it must see EINTR at SIGTERM, not the lock).
func TestFileLocksTree(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	work := t.TempDir()
	v, tree := startTreeVictim(t, "locks", work, "tree")
	if len(tree) != 2 {
		t.Fatalf("want the victim and its child, got\n%s", testutil.FormatTree(tree))
	}
	child := tree[1].Pid
	requireLocksHeld(t, work, v.Pid, "before the dump")
	requireChildLock(t, work, child, "before the dump")
	dir := t.TempDir()
	dumpTree(t, v, tree, dir, "-l")
	testutil.CheckImages(t, dir)
	ents := testutil.ReadImage(t, dir, "filelocks.img", func() *filelock.FileLockEntry { return &filelock.FileLockEntry{} })
	var childLocks []string
	for _, e := range ents {
		if int(e.GetPid()) == child {
			childLocks = append(childLocks, fmt.Sprintf("flag %d type %d fd %d start %d len %d", e.GetFlag(), e.GetType(), e.GetFd(), e.GetStart(), e.GetLen()))
		}
	}
	if want := "[flag 1 type 1 fd 52 start 1000 len 100]"; len(ents) != 6 || fmt.Sprint(childLocks) != want {
		t.Errorf("filelocks.img: %d entries, the child's %v; want 6, the child's %s", len(ents), childLocks, want)
	}
	testutil.RestoreDetached(t, dir, v, "-l")
	got := testutil.WaitTree(t, v.Pid, tree, false, 5*time.Second)
	testutil.Track(t, testutil.Pids(got[1:]), v.Pid)
	requireLocksHeld(t, work, v.Pid, "after the restore")
	requireChildLock(t, work, child, "after the restore")
	testutil.WaitFor(t, 5*time.Second, "the child to wait in fcntl again", func() bool {
		nr, err := testutil.CurrentSyscall(child)
		return err == nil && nr == unix.SYS_FCNTL
	})
	v.TermAndCheck(t)
}

func requireChildLock(t *testing.T, dir string, child int, when string) {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "posix"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fl := unix.Flock_t{Type: unix.F_RDLCK, Whence: unix.SEEK_SET, Start: 1000, Len: 100}
	if err := unix.FcntlFlock(f.Fd(), unix.F_GETLK, &fl); err != nil {
		t.Fatal(err)
	}
	if fl.Type != unix.F_WRLCK || int(fl.Pid) != child || fl.Start != 1000 || fl.Len != 100 {
		t.Errorf("%s: bytes 1000-1099: %+v, want the write lock of the child %d", when, fl, child)
	}
}

// TestFileLocksDumpWithoutFlag: without -l a lock holder is refused with
// an error that names pid, lock, file and fd and says what to do, and it
// goes on running with all its locks.
func TestFileLocksDumpWithoutFlag(t *testing.T) {
	t.Parallel()
	v, work := startLocks(t)
	msg := testutil.DumpFail(t, v.Pid, t.TempDir())
	testutil.AssertContains(t, msg, fmt.Sprintf("pid %d holds an flock write lock on %s", v.Pid, filepath.Join(work, "flock-ex")),
		"(fd 50)", "-l/--file-locks")
	testutil.AssertRunning(t, v.Pid)
	requireLocksHeld(t, work, v.Pid, "after the refused dump")
	v.TermAndCheck(t)
}

// TestFileLocksRestoreWithoutFlag: images with locks restored without -l
// are refused, naming the option, and leave nothing behind; the same
// images then restore with it.
func TestFileLocksRestoreWithoutFlag(t *testing.T) {
	t.Parallel()
	v, work := startLocks(t)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir, "-l")
	v.Reap(t)
	msg := testutil.RestoreFail(t, dir)
	testutil.AssertContains(t, msg, "5 file lock(s)", "-l/--file-locks")
	testutil.AssertNoTask(t, v.Pid)
	testutil.RestoreDetached(t, dir, v, "-l")
	requireLocksHeld(t, work, v.Pid, "after the restore")
	v.TermAndCheck(t)
}

// TestFileLocksRestoreConflict: a lock another process took since the dump
// makes the restore fail at once (no wait), naming the lock and file, and
// the locks the restore had already taken are released with the rest;
// once the other process lets go, the restore succeeds.
func TestFileLocksRestoreConflict(t *testing.T) {
	t.Parallel()
	v, work := startLocks(t)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir, "-l")
	v.Reap(t)

	// A POSIX write lock of the test process on byte 0 of "posix"
	// conflicts with the victim's read lock: the fcntl injected in the
	// restored task fails, after stasis took both flocks.
	f, err := os.OpenFile(filepath.Join(work, "posix"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fl := unix.Flock_t{Type: unix.F_WRLCK, Whence: unix.SEEK_SET, Start: 0, Len: 1}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &fl); err != nil {
		t.Fatal(err)
	}
	msg := testutil.RestoreFail(t, dir, "-l")
	testutil.AssertContains(t, msg, "POSIX read lock (bytes 0-99)", filepath.Join(work, "posix"), "(fd 52)",
		"another process holds a conflicting lock")
	testutil.AssertNoTask(t, v.Pid)
	for _, name := range []string{"flock-ex", "flock-sh"} {
		g, err := os.OpenFile(filepath.Join(work, name), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Flock(int(g.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			t.Errorf("%s is still locked after the failed restore: %v", name, err)
		}
		g.Close()
	}

	fl.Type = unix.F_UNLCK
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &fl); err != nil {
		t.Fatal(err)
	}
	testutil.RestoreDetached(t, dir, v, "-l")
	requireLocksHeld(t, work, v.Pid, "after the restore")
	v.TermAndCheck(t)
}

// TestFileLocksVictimDetectsLoss: the victim passes without a dump, and
// notices when its flock and OFD locks are gone: the test takes copies of
// its fds 50 and 53 (pidfd_getfd: the same open files) and unlocks them.
func TestFileLocksVictimDetectsLoss(t *testing.T) {
	t.Parallel()
	v, _ := startLocks(t)
	v.TermAndCheck(t)

	v, _ = startLocks(t)
	pfd, err := unix.PidfdOpen(v.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pfd)
	steal := func(fd int) int {
		c, err := unix.PidfdGetfd(pfd, fd, 0)
		if err != nil {
			t.Fatalf("pidfd_getfd fd %d of pid %d: %v", fd, v.Pid, err)
		}
		return c
	}
	ex := steal(50)
	defer unix.Close(ex)
	if err := unix.Flock(ex, unix.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	ofd := steal(53)
	defer unix.Close(ofd)
	fl := unix.Flock_t{Type: unix.F_UNLCK, Whence: unix.SEEK_SET}
	if err := unix.FcntlFlock(uintptr(ofd), unix.F_OFD_SETLK, &fl); err != nil {
		t.Fatal(err)
	}
	v.Signal(t, unix.SIGTERM)
	if code := v.Wait(t, 15*time.Second); code != 1 {
		t.Fatalf("victim exited %d after losing two locks, want 1\n%s", code, v.LogTail())
	}
	testutil.AssertContains(t, v.LogTail(), "FAIL: fd 50", "FAIL: fd 53")
}
