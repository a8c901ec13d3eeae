package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
	"golang.org/x/sys/unix"
)

// The victims of the process-tree and multithreading tests, run without any
// dump (TestVictimsSelfCheckTrees) and damaged behind their back
// (TestVictimsDetectLossTrees), like TestVictimsSelfCheck and
// TestVictimsDetectLoss do for the others: `go test -run TestVictims` runs
// all four.

// credsVictim starts the creds victim, whose ready file must be in a
// directory that uid 65534 / fsuid 2000 can write and reach.
func credsVictim(t *testing.T) *testutil.Victim {
	t.Helper()
	rdir, err := os.MkdirTemp("", "stasis-e2e-creds-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(rdir) })
	if err := os.Chmod(rdir, 0o777); err != nil {
		t.Fatal(err)
	}
	ready := filepath.Join(rdir, "ready")
	v := testutil.StartProgram(t, testutil.BuildVictim(t, "creds"), ready)
	v.Ready = ready
	v.WaitReady(t)
	return v
}

func TestVictimsSelfCheckTrees(t *testing.T) {
	testutil.RequireRoot(t) // creds drops privileges, tree and cowtree fork as root
	t.Parallel()
	simple := []struct {
		label, name string
		args        []string
	}{
		{"threads", "threads", nil},
		{"threads-1000", "threads", []string{"1000"}},
		{"threads-2", "threads", []string{"2"}},
		{"tree", "tree", nil},
		{"tree-memfd", "tree", []string{"memfd"}},
		{"timers", "timers", nil},
		{"cowtree", "cowtree", []string{"16", "3"}},
	}
	for _, c := range simple {
		t.Run(c.label, func(t *testing.T) {
			v, tree := startTreeVictim(t, c.name, c.args...)
			time.Sleep(50 * time.Millisecond)
			v.TermAndCheck(t)
			assertTreeGone(t, tree)
		})
	}
	for _, mode := range []string{"threads", "forks"} {
		t.Run("churn-"+mode, func(t *testing.T) {
			status := filepath.Join(t.TempDir(), "cycles")
			v := testutil.StartVictim(t, "churn", status, mode)
			killForkingTree(t, v)
			v.WaitReady(t)
			n := testutil.ReadCounter(t, status)
			testutil.WaitFor(t, 5*time.Second, "churning", func() bool { return testutil.ReadCounter(t, status) > n+10 })
			v.TermAndCheck(t)
		})
	}
	t.Run("creds", func(t *testing.T) {
		v := credsVictim(t)
		tree := testutil.TrackTree(t, v.Pid)
		v.TermAndCheck(t)
		assertTreeGone(t, tree)
	})
	t.Run("strict-term", func(t *testing.T) {
		v := testutil.StartVictim(t, "strict")
		v.WaitReady(t)
		testutil.WaitFor(t, 2*time.Second, "Seccomp: 1", func() bool {
			st, err := testutil.Status(v.Pid)
			return err == nil && st["Seccomp"] == "1"
		})
		v.TermAndCheck(t)
	})
	t.Run("strict-usr1", func(t *testing.T) {
		v := testutil.StartVictim(t, "strict")
		v.WaitReady(t)
		testutil.WaitFor(t, 2*time.Second, "Seccomp: 1", func() bool {
			st, err := testutil.Status(v.Pid)
			return err == nil && st["Seccomp"] == "1"
		})
		v.Signal(t, unix.SIGUSR1)
		if code := v.Wait(t, 5*time.Second); code != 128+int(unix.SIGKILL) {
			t.Fatalf("exit %d, want %d\n%s", code, 128+int(unix.SIGKILL), v.LogTail())
		}
	})
	t.Run("gocounter", func(t *testing.T) {
		work := t.TempDir()
		status, ready := filepath.Join(work, "count"), filepath.Join(work, "ready")
		v := testutil.StartProgram(t, testutil.BuildGoVictim(t, "gocounter"), ready, status)
		v.Ready = ready
		v.WaitReady(t)
		goUSR1(t, v, 1)
		goUSR1(t, v, 2)
		v.TermAndCheck(t)
	})
	t.Run("bash-loop", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "count")
		v := testutil.StartProgram(t, program(t, "bash"), "-c", bashLoop, file)
		killForkingTree(t, v)
		testutil.WaitFor(t, 5*time.Second, "bash to count to 3", func() bool {
			return fileExists(file) && readIntFile(t, file) >= 3
		})
	})
}

func TestVictimsDetectLossTrees(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	t.Run("threads", func(t *testing.T) {
		v := testutil.StartVictim(t, "threads")
		v.WaitReady(t)
		ths, err := testutil.Threads(v.Pid)
		if err != nil {
			t.Fatal(err)
		}
		byName := map[string]int{}
		for _, th := range ths {
			byName[th.Comm] = th.Tid
		}
		// A signal queued to a thread that had none, the registers of a
		// spinning thread changed. (A thread's name cannot be changed from
		// outside its process: /proc/PID/task/TID/comm refuses.)
		if err := unix.Tgkill(v.Pid, byName["w3"], unix.Signal(34+1)); err != nil {
			t.Fatal(err)
		}
		spinner := logPid(t, v, `worker 2 spins as tid ([0-9]+)`)
		for i := 0; i < 5; i++ { // it may be sleeping between two spins
			flipXMM3(t, spinner)
			time.Sleep(10 * time.Millisecond)
		}
		expectDetected(t, v, "FAIL: worker 3 (timed", "SIGRTMIN+1 (si_value",
			"FAIL: worker 2 (spin", "changed while it spun")
	})
	t.Run("tree", func(t *testing.T) {
		v, _ := startTreeVictim(t, "tree")
		b, _ := os.ReadFile(v.Log)
		addr := hexAfter(t, string(b), "shared region at ")
		// The data page of C1 (member 10) follows the header page.
		writeMem(t, v.Pid, addr+4096*(1+10)+64, []byte("lost!"))
		expectDetected(t, v, "FAIL: shared page of tree-C1", "member(s) reported failures")
	})
	t.Run("tree-member-killed", func(t *testing.T) {
		v, tree := startTreeVictim(t, "tree")
		var f2 int
		for _, x := range tree {
			if x.Comm == "tree-F2" {
				f2 = x.Pid
			}
		}
		if err := unix.Kill(f2, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		expectDetected(t, v, "tree-F2 (pid "+strconv.Itoa(f2)+") did not report", "child tree-F2 (pid "+strconv.Itoa(f2)+") ended with status 0x9")
	})
	t.Run("timers", func(t *testing.T) {
		v := testutil.StartVictim(t, "timers")
		v.WaitReady(t)
		// A SIGRTMIN+4 that no timer sent: no SI_TIMER, no timer id, no value.
		v.Signal(t, unix.Signal(34+4))
		time.Sleep(20 * time.Millisecond)
		expectDetected(t, v, "FAIL: T0 (SIGEV_SIGNAL, 50 ms): 1 signal(s) with si_value", "1 signal(s) with si_timerid")
	})
	t.Run("creds-child-killed", func(t *testing.T) {
		v := credsVictim(t)
		tree := testutil.TrackTree(t, v.Pid)
		if len(tree) != 2 {
			t.Fatalf("tree: %v", tree)
		}
		unix.Kill(tree[1].Pid, unix.SIGKILL)
		expectDetected(t, v, "FAIL: main: the child "+strconv.Itoa(tree[1].Pid)+" ended with status 0x9")
	})
	t.Run("cowtree", func(t *testing.T) {
		v, _ := startTreeVictim(t, "cowtree", "16", "3")
		b, _ := os.ReadFile(v.Log)
		addr := hexAfter(t, string(b), "MiB at ")
		child := logPid(t, v, `child cow-1 is pid ([0-9]+)`)
		writeMem(t, child, addr+12345*8, []byte("lost!"))
		expectDetected(t, v, "FAIL: shared copy-on-write region", "FAIL: child cow-1 (pid "+strconv.Itoa(child)+") ended with status 0x100")
	})
}

// hexAfter parses the 0x... number that follows prefix in s.
func hexAfter(t *testing.T, s, prefix string) uint64 {
	t.Helper()
	i := strings.Index(s, prefix)
	if i < 0 {
		t.Fatalf("no %q in the victim log:\n%s", prefix, s)
	}
	s = s[i+len(prefix):]
	j := 0
	for j < len(s) && (s[j] == 'x' || s[j] >= '0' && s[j] <= '9' || s[j] >= 'a' && s[j] <= 'f') {
		j++
	}
	n, err := strconv.ParseUint(s[:j], 0, 64)
	if err != nil {
		t.Fatalf("bad address %q after %q", s[:j], prefix)
	}
	return n
}

// writeMem writes p at addr of pid through /proc/PID/mem.
func writeMem(t *testing.T, pid int, addr uint64, p []byte) {
	t.Helper()
	f, err := os.OpenFile("/proc/"+strconv.Itoa(pid)+"/mem", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(p, int64(addr)); err != nil {
		t.Fatalf("write pid %d at %#x: %v", pid, addr, err)
	}
}
