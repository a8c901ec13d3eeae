package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	filelock "github.com/checkpoint-restore/go-criu/v8/crit/images/file-lock"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// The lease victim (test/victims/lease.c) holds a read lease on DIR/rd
// (fd 50) and a write lease on DIR/wr (fd 51, F_SETSIG SIGRTMIN+2). The
// test is another process: its opens of those files break the leases.

// startLease starts the lease victim in mode; uid >= 0 makes it run as
// that uid, which then needs a ready file in a directory anyone can write.
func startLease(t *testing.T, mode string, uid int) (*testutil.Victim, string) {
	testutil.RequireRoot(t)
	work := t.TempDir()
	var v *testutil.Victim
	if uid < 0 {
		v = testutil.StartVictim(t, "lease", work, mode)
	} else {
		rdir, err := os.MkdirTemp("", "stasis-e2e-lease-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(rdir) })
		if err := os.Chmod(rdir, 0o777); err != nil {
			t.Fatal(err)
		}
		ready := filepath.Join(rdir, "ready")
		v = testutil.StartProgram(t, testutil.BuildVictim(t, "lease"), ready, work, mode, fmt.Sprint(uid))
		v.Ready = ready
	}
	v.WaitReady(t)
	requireLeases(t, v.Pid, unix.F_RDLCK, unix.F_WRLCK, "before the dump")
	return v, work
}

// leaseOf is F_GETLEASE of fd of pid, read on a copy of the fd (the same
// open file description, which the lease belongs to).
func leaseOf(t *testing.T, pid, fd int) int {
	t.Helper()
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pfd)
	cp, err := unix.PidfdGetfd(pfd, fd, 0)
	if err != nil {
		t.Fatalf("pidfd_getfd fd %d of pid %d: %v", fd, pid, err)
	}
	defer unix.Close(cp)
	typ, err := unix.FcntlInt(uintptr(cp), unix.F_GETLEASE, 0)
	if err != nil {
		t.Fatalf("F_GETLEASE fd %d of pid %d: %v", fd, pid, err)
	}
	return typ
}

func requireLeases(t *testing.T, pid, rd, wr int, when string) {
	t.Helper()
	if got := leaseOf(t, pid, 50); got != rd {
		t.Errorf("%s: fd 50 lease type %d, want %d", when, got, rd)
	}
	if got := leaseOf(t, pid, 51); got != wr {
		t.Errorf("%s: fd 51 lease type %d, want %d", when, got, wr)
	}
}

// openNB opens name for writing without waiting for a lease break.
func openNB(path string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err == nil {
		unix.Close(fd)
	}
	return err
}

// breakAndWait opens DIR/wr for writing: the first try must be refused
// (EWOULDBLOCK, the break starts), and the victim must give the lease up
// so that a later try succeeds.
func breakAndWait(t *testing.T, work string) {
	t.Helper()
	wr := filepath.Join(work, "wr")
	if err := openNB(wr); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("open of the leased %s: %v, want EWOULDBLOCK", wr, err)
	}
	testutil.WaitFor(t, 5*time.Second, "the victim to give its write lease up", func() bool { return openNB(wr) == nil })
}

// lockEntries is filelocks.img (locks and leases), sorted, as "flag F
// type T pid P fd N start S len L".
func lockEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents := testutil.ReadImage(t, dir, "filelocks.img", func() *filelock.FileLockEntry { return &filelock.FileLockEntry{} })
	var got []string
	for _, e := range ents {
		got = append(got, fmt.Sprintf("flag %d type %d pid %d fd %d start %d len %d",
			e.GetFlag(), e.GetType(), e.GetPid(), e.GetFd(), e.GetStart(), e.GetLen()))
	}
	sort.Strings(got)
	return got
}

// critShowsLeases checks that crit itself shows want lease entries (flag 8)
// in filelocks.img.
func critShowsLeases(t *testing.T, dir string, want int) {
	t.Helper()
	crit := testutil.RequireTool(t, "crit")
	out, err := exec.Command(crit, "show", filepath.Join(dir, "filelocks.img")).CombinedOutput()
	if err != nil {
		t.Fatalf("crit show filelocks.img: %v\n%s", err, out)
	}
	if n := strings.Count(strings.ReplaceAll(string(out), " ", ""), `"flag":8`); n != want {
		t.Errorf("crit show filelocks.img: %d entries of flag 8, want %d\n%s", n, want, out)
	}
}

func testLeases(t *testing.T, uid int) {
	v, work := startLease(t, "active", uid)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir, "-l")
	v.Reap(t)
	testutil.CheckImages(t, dir)
	critShowsLeases(t, dir, 2)
	want := []string{
		fmt.Sprintf("flag 8 type 0 pid %d fd 50 start 0 len 0", v.Pid),
		fmt.Sprintf("flag 8 type 1 pid %d fd 51 start 0 len 0", v.Pid),
	}
	if got := lockEntries(t, dir); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("filelocks.img:\n got %q\nwant %q", got, want)
	}
	testutil.RestoreDetached(t, dir, v, "--file-locks")
	requireLeases(t, v.Pid, unix.F_RDLCK, unix.F_WRLCK, "after the restore")
	breakAndWait(t, work)
	// The read lease stays: an open for reading does not break it.
	requireLeases(t, v.Pid, unix.F_RDLCK, unix.F_UNLCK, "after the break")
	v.TermAndCheck(t)
	testutil.AssertContains(t, v.LogTail(), "break: signal", "si_fd 51 lease 2")
}

// TestLeases: with -l a read and a write lease come back to the task (a
// lease taken by stasis would be stasis's): F_GETLEASE gives the same
// types, and the test's open for writing breaks the write lease: the
// victim gets its F_SETSIG signal with si_fd 51, gives the lease up, and
// the open goes through.
func TestLeases(t *testing.T) { testLeases(t, -1) }

// TestLeasesNonRoot: the same for a victim running as uid 65534 on files
// it owns: the restored task takes its leases back before it drops root.
func TestLeasesNonRoot(t *testing.T) { testLeases(t, 65534) }

// TestLeaseBreaking: a lease being broken at the dump (the test opened
// the file for writing with O_NONBLOCK; the victim has the break signal
// pending and does not react) is still being broken after the restore:
// F_GETLEASE shows the break's target, F_UNLCK; the victim gets the one
// signal it had pending, no second one, and when it gives the lease up
// the file opens.
func TestLeaseBreaking(t *testing.T) {
	v, work := startLease(t, "breaking", -1)
	wr := filepath.Join(work, "wr")
	if err := openNB(wr); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("open of the leased %s: %v, want EWOULDBLOCK", wr, err)
	}
	requireLeases(t, v.Pid, unix.F_RDLCK, unix.F_UNLCK, "once the break started")
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir, "-l")
	v.Reap(t)
	testutil.CheckImages(t, dir)
	critShowsLeases(t, dir, 2)
	want := []string{
		fmt.Sprintf("flag 8 type 0 pid %d fd 50 start 0 len 0", v.Pid),
		fmt.Sprintf("flag 8 type 6 pid %d fd 51 start 0 len 0", v.Pid), // F_UNLCK | LEASE_BREAKING
	}
	if got := lockEntries(t, dir); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("filelocks.img:\n got %q\nwant %q", got, want)
	}
	testutil.RestoreDetached(t, dir, v, "-l")
	requireLeases(t, v.Pid, unix.F_RDLCK, unix.F_UNLCK, "after the restore")
	if err := openNB(wr); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("open of %s after the restore: %v, want EWOULDBLOCK (the lease is being broken)", wr, err)
	}
	v.Signal(t, unix.SIGUSR1)
	testutil.WaitFor(t, 5*time.Second, "the victim to give its write lease up", func() bool { return openNB(wr) == nil })
	v.TermAndCheck(t)
	testutil.AssertContains(t, v.LogTail(), "break: signal", "si_fd 51 lease 2")
}

// TestLeasesWithoutFlag: without -l a lease holder is refused at the dump,
// naming pid, lease, file and fd, and goes on with its leases; images
// with leases are refused at a restore without -l, leaving nothing.
func TestLeasesWithoutFlag(t *testing.T) {
	v, work := startLease(t, "active", -1)
	msg := testutil.DumpFail(t, v.Pid, t.TempDir())
	testutil.AssertContains(t, msg, fmt.Sprintf("pid %d holds a read lease on %s", v.Pid, filepath.Join(work, "rd")),
		"(fd 50)", "-l/--file-locks")
	testutil.AssertRunning(t, v.Pid)
	requireLeases(t, v.Pid, unix.F_RDLCK, unix.F_WRLCK, "after the refused dump")

	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir, "-l")
	v.Reap(t)
	msg = testutil.RestoreFail(t, dir)
	testutil.AssertContains(t, msg, "2 file lock(s)", "a read lease of pid", "-l/--file-locks")
	testutil.AssertNoTask(t, v.Pid)
	testutil.RestoreDetached(t, dir, v, "-l")
	requireLeases(t, v.Pid, unix.F_RDLCK, unix.F_WRLCK, "after the restore")
	v.TermAndCheck(t)
}

// TestLeaseRestoreConflict: a file opened for writing since the dump
// refuses the write lease: the restore fails at once naming the lease,
// file, pid and fd, and leaves nothing (the read lease it had taken goes
// with the task); once the file is closed, the restore succeeds.
func TestLeaseRestoreConflict(t *testing.T) {
	v, work := startLease(t, "active", -1)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir, "-l")
	v.Reap(t)
	wr := filepath.Join(work, "wr")
	f, err := os.OpenFile(wr, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	msg := testutil.RestoreFail(t, dir, "-l")
	testutil.AssertContains(t, msg, fmt.Sprintf("take a write lease of pid %d on %s (fd 51) again", v.Pid, wr),
		"another process has the file open")
	testutil.AssertNoTask(t, v.Pid)
	if err := openNB(filepath.Join(work, "rd")); err != nil {
		t.Errorf("the read lease outlives the failed restore: open for writing: %v", err)
	}
	f.Close()
	testutil.RestoreDetached(t, dir, v, "-l")
	requireLeases(t, v.Pid, unix.F_RDLCK, unix.F_WRLCK, "after the restore")
	v.TermAndCheck(t)
}
