package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
	"golang.org/x/sys/unix"
)

// program finds an ordinary program, preferring Debian's own binary (a
// pyenv shim, for one, is a script that execs something else).
func program(t *testing.T, name string) string {
	t.Helper()
	if p := "/usr/bin/" + name; fileExists(p) {
		return p
	}
	return testutil.RequireTool(t, name)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// waitSleeping waits until pid is blocked in nanosleep or clock_nanosleep.
func waitSleeping(t *testing.T, pid int) {
	t.Helper()
	testutil.WaitFor(t, 5*time.Second, "the task to sleep in (clock_)nanosleep", func() bool {
		nr, err := testutil.CurrentSyscall(pid)
		return err == nil && (nr == unix.SYS_NANOSLEEP || nr == unix.SYS_CLOCK_NANOSLEEP)
	})
}

// TestSleep: `sleep 1000` restored is still sleeping, until killed.
func TestSleep(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartProgram(t, program(t, "sleep"), "1000")
	waitSleeping(t, v.Pid)
	testutil.DumpRestore(t, v)

	time.Sleep(300 * time.Millisecond)
	if !testutil.ProcessAlive(v.Pid) {
		t.Fatalf("restored sleep ended: exit %d\n%s", v.Wait(t, time.Second), v.LogTail())
	}
	waitSleeping(t, v.Pid)
	v.Signal(t, unix.SIGKILL)
	if code := v.Wait(t, 5*time.Second); code != 128+int(unix.SIGKILL) {
		t.Errorf("restored sleep ended with %d after SIGKILL, want %d", code, 128+int(unix.SIGKILL))
	}
}

// TestSleepRemainingTime: `sleep 3` dumped after about 1 s and restored at
// once (in the foreground: stasis restore exits with sleep's 0) ends within
// about its remaining time, not never and not at once.
func TestSleepRemainingTime(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartProgram(t, program(t, "sleep"), "3")
	started := time.Now()
	waitSleeping(t, v.Pid)
	time.Sleep(time.Second - time.Since(started))
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	restoreAt := time.Now()
	testutil.Restore(t, dir, v)
	code := v.Wait(t, 10*time.Second)
	took := time.Since(restoreAt)
	t.Logf("restored sleep 3 (dumped after %v) ended %v after the restore began, exit %d",
		restoreAt.Sub(started).Round(time.Millisecond), took.Round(time.Millisecond), code)
	if code != 0 {
		t.Errorf("sleep exited %d, want 0\n%s", code, v.LogTail())
	}
	// About 2 s are left at the dump; the restore itself may take seconds
	// on a loaded machine.
	if took < time.Second || took > 10*time.Second {
		t.Errorf("sleep ended %v after the restore, want 1 s .. 10 s", took)
	}
}

const pythonCounter = `
import os, signal, sys, time

path, ready = sys.argv[1], sys.argv[2]
data = list(range(200000))
want = sum(data)
n = 0

def on_term(sig, frame):
    ok = sum(data) == want and len(data) == 200000
    print("python counter: n=%d, data %s" % (n, "intact" if ok else "CHANGED"), flush=True)
    if not ok:
        print("FAIL: python list changed", file=sys.stderr, flush=True)
    os._exit(0 if ok else 1)

signal.signal(signal.SIGTERM, on_term)
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
while True:
    n += 1
    os.pwrite(fd, b"%20d\n" % n, 0)
    if n == 1:
        open(ready, "w").close()
    time.sleep(0.05)
`

// TestPythonCounter: a single-threaded python3 script writing a counter to
// a file every 50 ms continues from where it was after the restore; its
// heap (a 200000-int list) is intact when SIGTERM makes it check itself.
func TestPythonCounter(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	work := t.TempDir()
	script, status, ready := filepath.Join(work, "counter.py"), filepath.Join(work, "count"), filepath.Join(work, "ready")
	if err := os.WriteFile(script, []byte(pythonCounter), 0o644); err != nil {
		t.Fatal(err)
	}
	v := testutil.StartProgram(t, program(t, "python3"), script, status, ready)
	v.Ready = ready
	v.WaitReady(t)
	time.Sleep(300 * time.Millisecond)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	at := testutil.ReadCounter(t, status)
	testutil.CheckImages(t, dir)
	// The restored counter may count from the restore's start on.
	start := time.Now()
	testutil.RestoreDetached(t, dir, v)

	// Every value from now on continues the dumped count: no reset. It
	// moves on (by one every 50 ms, once the loaded machine runs it).
	var n uint64
	sample := func() uint64 {
		t.Helper()
		if n = testutil.ReadCounter(t, status); n < at {
			t.Fatalf("counter went from %d (dump) to %d after the restore: reset", at, n)
		}
		return n
	}
	for time.Since(start) < 500*time.Millisecond {
		sample()
		time.Sleep(10 * time.Millisecond)
	}
	testutil.WaitFor(t, 10*time.Second, "the restored counter to move on", func() bool { return sample() > at })
	if took := time.Since(start); n > at+uint64(took/(50*time.Millisecond))+5 {
		t.Errorf("counter is %d %v after the restore, dumped at %d: more than one step per 50 ms", n, took.Round(time.Millisecond), at)
	}
	t.Logf("python counter: %d at dump, %d %v after the restore", at, n, time.Since(start).Round(time.Millisecond))
	v.TermAndCheck(t)
}

// TestTailFollow: `tail -f` (polling, not inotify) of a regular file prints,
// after the restore, the lines appended to the file after the restore.
func TestTailFollow(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	file := filepath.Join(t.TempDir(), "followed")
	if err := os.WriteFile(file, []byte("line 1 before the dump\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// ---disable-inotify: coreutils' own switch to the sleep-and-poll loop.
	v := testutil.StartProgram(t, program(t, "tail"), "---disable-inotify", "-s", "0.05", "-f", file)
	waitLog := func(what string) {
		t.Helper()
		testutil.WaitFor(t, 5*time.Second, "tail to print "+what, func() bool {
			b, _ := os.ReadFile(v.Log)
			return strings.Contains(string(b), what)
		})
	}
	waitLog("line 1 before the dump")
	testutil.DumpRestore(t, v)

	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("line 2 after the restore\n")
	f.Close()
	waitLog("line 2 after the restore")
	if b, _ := os.ReadFile(v.Log); strings.Count(string(b), "line 1") != 1 {
		t.Errorf("tail output after restore:\n%s", b)
	}
	v.Signal(t, unix.SIGTERM)
	if code := v.Wait(t, 5*time.Second); code != 128+int(unix.SIGTERM) {
		t.Errorf("tail ended with %d after SIGTERM, want %d", code, 128+int(unix.SIGTERM))
	}
}
