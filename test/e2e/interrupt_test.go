package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// hookEnv is stasis' test-only hook (internal/interrupt.TestEnv): stasis
// sends itself a signal when it reaches the named point.
const hookEnv = "STASIS_TEST_SIGNAL_AT"

// runStasisEnv runs stasis like testutil.Run with extra environment
// variables (the hook), and returns the exit code, -9 style negative for a
// death by signal (128+sig is what stasis exits with when it catches one).
func runStasisEnv(t *testing.T, env []string, args ...string) testutil.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, testutil.StasisBin(t), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 5 * time.Second // a child stasis left holding its stderr
	start := time.Now()
	err := cmd.Run()
	r := testutil.Result{Args: args, Stdout: out.String(), Stderr: errb.String(), Took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		r.Code = -1
		r.Stderr += "\n(killed: still running after 60s)"
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			r.Code = -int(ws.Signal())
		}
	case err != nil:
		t.Fatalf("run stasis: %v", err)
	}
	return r
}

// signalState is what an interrupted dump must leave as it was in every
// thread of a task: blocked, pending and caught signals, the state letter.
func signalState(t *testing.T, pid int) map[string]string {
	t.Helper()
	out := map[string]string{}
	ths, err := testutil.Threads(pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, th := range ths {
		st, err := testutil.Status(th.Tid)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"SigBlk", "SigPnd", "ShdPnd", "SigCgt", "SigIgn"} {
			out[fmt.Sprintf("%d %s", th.Tid, k)] = st[k]
		}
	}
	return out
}

func assertSameSignals(t *testing.T, pid int, before map[string]string) {
	t.Helper()
	after := signalState(t, pid)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("thread %s: %q before the dump, %q after", k, v, after[k])
		}
	}
}

var sigNames = map[unix.Signal]string{unix.SIGINT: "INT", unix.SIGTERM: "TERM", unix.SIGKILL: "KILL"}

// checkInterrupted checks the exit of a stasis run that the hook signaled
// with sig: 128+sig and a message that says where, or death by SIGKILL.
func checkInterrupted(t *testing.T, r testutil.Result, sig unix.Signal) {
	t.Helper()
	if sig == unix.SIGKILL {
		if r.Code != -int(unix.SIGKILL) {
			t.Fatalf("want stasis killed by SIGKILL\n%s", r)
		}
		return
	}
	if r.Code != 128+int(sig) {
		t.Fatalf("want exit %d (128+%v)\n%s", 128+int(sig), sig, r)
	}
	testutil.AssertContains(t, r.Stderr, "interrupted at", "got "+unix.SignalName(sig))
}

// dumpPoints are five points of a dump where the hook signals stasis: the
// tree just seized, task state being read, the middle of the page copy,
// every image but inventory.img written, the last point before the kill.
var dumpPoints = []string{"dump-seize", "dump-task-state", "dump-page-copy", "dump-inventory", "dump-finish"}

// TestInterruptDump: SIGINT and SIGTERM at each of dumpPoints of a dump of
// a 1 GiB victim, with and without -R, make stasis roll back and exit
// 130/143: the victim is left running, untraced, with the same blocked,
// pending and caught signals in every thread, and the images dir that the
// dump created is gone. SIGHUP and SIGPIPE give 129 and 141; Ctrl-C three
// times does not cut the rollback short. Then a few signals at random
// times: either the dump rolled back, or it was past its point of no
// return and is complete. The victim finally checks its whole memory.
// Parallel: a dump makes no puppet nor child, and the hook signals only
// the stasis it is set for.
func TestInterruptDump(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v := testutil.StartVictim(t, "mem", "1024")
	waitReadyLong(t, v)
	before := signalState(t, v.Pid)
	base := t.TempDir()
	n := 0
	for _, leave := range []bool{false, true} {
		for _, point := range dumpPoints {
			for _, sig := range []unix.Signal{unix.SIGINT, unix.SIGTERM} {
				name := fmt.Sprintf("%s/%s/R=%v", point, sigNames[sig], leave)
				n++
				dir := filepath.Join(base, strconv.Itoa(n))
				args := []string{"dump", "-t", strconv.Itoa(v.Pid), "-D", dir}
				if leave {
					args = append(args, "-R")
				}
				r := runStasisEnv(t, []string{hookEnv + "=" + point + ":" + sigNames[sig]}, args...)
				t.Logf("%s: exit %d in %v", name, r.Code, r.Took.Round(time.Millisecond))
				checkInterrupted(t, r, sig)
				if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
					ents, _ := os.ReadDir(dir)
					t.Errorf("%s: the images dir the dump created is still there (%v), holding %d files", name, err, len(ents))
				}
				assertRunning(t, v.Pid)
				assertSameSignals(t, v.Pid, before)
			}
		}
	}
	// SIGHUP and SIGPIPE in the page copy: 129 and 141.
	for _, sig := range []unix.Signal{unix.SIGHUP, unix.SIGPIPE} {
		n++
		dir := filepath.Join(base, strconv.Itoa(n))
		r := runStasisEnv(t, []string{hookEnv + "=dump-page-copy:" + strings.TrimPrefix(unix.SignalName(sig), "SIG")},
			"dump", "-t", strconv.Itoa(v.Pid), "-D", dir)
		checkInterrupted(t, r, sig)
		assertRunning(t, v.Pid)
		assertSameSignals(t, v.Pid, before)
	}
	// Ctrl-C pressed three times: the second and third come while the
	// first one's rollback runs, and must not cut it short.
	n++
	r := runStasisEnv(t, []string{hookEnv + "=dump-inventory:INT:3"}, "dump", "-t", strconv.Itoa(v.Pid), "-D", filepath.Join(base, strconv.Itoa(n)))
	checkInterrupted(t, r, unix.SIGINT)
	testutil.AssertContains(t, r.Stderr, "still rolling back")
	if _, err := os.Stat(filepath.Join(base, strconv.Itoa(n))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("triple Ctrl-C: the images dir is still there (%v)", err)
	}
	assertRunning(t, v.Pid)
	assertSameSignals(t, v.Pid, before)
	// A signal at a random moment of a -R dump (typically 2-4 s here).
	for i := 0; i < 3; i++ {
		n++
		dir := filepath.Join(base, strconv.Itoa(n))
		cmd := exec.Command(testutil.StasisBin(t), "dump", "-t", strconv.Itoa(v.Pid), "-D", dir, "-R")
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		delay := time.Duration(rand.Int64N(int64(3 * time.Second)))
		time.Sleep(delay)
		_ = cmd.Process.Signal(unix.SIGINT)
		err := cmd.Wait()
		code := cmd.ProcessState.ExitCode()
		t.Logf("SIGINT after %v: exit %d", delay.Round(time.Millisecond), code)
		switch {
		case err == nil:
			// Completed: the images must be whole.
			if _, err := os.Stat(filepath.Join(dir, "inventory.img")); err != nil {
				t.Errorf("dump exited 0 after SIGINT but has no inventory.img: %v", err)
			}
		case code == 130 || signalledBy(cmd.ProcessState, unix.SIGINT):
			// 130: stasis caught it and rolled back. Killed by it: it
			// came in the first milliseconds, before stasis had set its
			// handler, let alone touched the victim.
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("interrupted dump left %s (%v)", dir, err)
			}
		default:
			t.Errorf("SIGINT after %v: exit %d, want 130 or 0\n%s", delay, code, errb.String())
		}
		assertRunning(t, v.Pid)
		assertSameSignals(t, v.Pid, before)
	}
	v.TermAndCheck(t)
}

// restorePoints are five points of a restore where the hook signals stasis:
// the tree being created, the middle of the page fill, the files, the task
// state, the resume of the first task.
var restorePoints = []string{"restore-create-tree", "restore-page-fill", "restore-files", "restore-task-state", "restore-resume"}

// TestInterruptRestore: SIGINT and SIGTERM at each of restorePoints of a
// restore of a 256 MiB victim make stasis kill whatever it created and exit
// 130/143: no task holds the victim's pid and the test process got no
// stray child. The images then restore and the victim checks its memory.
func TestInterruptRestore(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, "mem", "256")
	waitReadyLong(t, v)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	for _, point := range restorePoints {
		for _, sig := range []unix.Signal{unix.SIGINT, unix.SIGTERM} {
			kids := testutil.Children(os.Getpid())
			r := runStasisEnv(t, []string{hookEnv + "=" + point + ":" + sigNames[sig]}, "restore", "-D", dir, "-d")
			t.Logf("%s/%s: exit %d in %v", point, sigNames[sig], r.Code, r.Took.Round(time.Millisecond))
			checkInterrupted(t, r, sig)
			testutil.AssertNoTask(t, v.Pid)
			testutil.AssertNoNewChildren(t, kids, dir)
		}
	}
	testutil.RestoreDetached(t, dir, v)
	v.TermAndCheck(t)
}

// TestPartialImages: an interrupted dump into a directory that runc has
// prepared (descriptors.json) with a log asked for (-o) leaves exactly
// those two files, says so, and a restore of the directory is refused as
// no complete dump. A dump that runs out of disk space (a 32 MiB tmpfs for
// a 128 MiB victim) leaves the directory empty, not a partial pages image,
// and the victim intact.
func TestPartialImages(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, "mem", "128")
	v.WaitReady(t)

	t.Run("interrupted", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "descriptors.json"), []byte(`["/dev/null"]`), 0o600); err != nil {
			t.Fatal(err)
		}
		r := runStasisEnv(t, []string{hookEnv + "=dump-inventory"}, "dump", "-t", strconv.Itoa(v.Pid), "-D", dir, "-o", "dump.log", "-v4")
		checkInterrupted(t, r, unix.SIGINT)
		testutil.AssertContains(t, r.Stderr, "partial images removed from "+dir, "dump.log kept")
		assertOnly(t, dir, "descriptors.json", "dump.log")
		assertRunning(t, v.Pid)
		msg := testutil.RestoreFail(t, dir)
		testutil.AssertContains(t, msg, "no inventory.img", "not a complete dump")
	})

	t.Run("disk-full", func(t *testing.T) {
		dir := t.TempDir()
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=32m"); err != nil {
			t.Skipf("mount a tmpfs: %v", err)
		}
		defer unix.Unmount(dir, unix.MNT_DETACH)
		msg := testutil.DumpFail(t, v.Pid, dir)
		testutil.AssertContains(t, msg, "no space left on device", "partial images removed from "+dir)
		assertOnly(t, dir)
		assertRunning(t, v.Pid)
		testutil.AssertContains(t, testutil.RestoreFail(t, dir), "no inventory.img")
	})
	v.TermAndCheck(t)
}

// waitReadyLong gives a big victim (1 GiB to fill and pattern) up to 90 s
// to get ready, more than WaitReady's 20 s: a loaded 2-core machine needs
// it.
func waitReadyLong(t *testing.T, v *testutil.Victim) {
	t.Helper()
	for end := time.Now().Add(90 * time.Second); time.Now().Before(end) && testutil.ProcessAlive(v.Pid); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(v.Ready); err == nil {
			break
		}
	}
	v.WaitReady(t)
}

// assertOnly fails unless dir holds exactly the files named.
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, " ") != strings.Join(names, " ") {
		t.Errorf("%s holds %q, want only %q", dir, got, names)
	}
}

// signalledBy reports whether the process ended killed by sig.
func signalledBy(ps *os.ProcessState, sig unix.Signal) bool {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}
