package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startShTree starts `sh -c SCRIPT` in its own session, tracked for cleanup
// (the root is reaped by the returned Cmd's Wait).
func startShTree(t *testing.T, script string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// A root (sleep 31) with a zombie child (true, never reaped: sleep does not
// wait) and a live child (sleep 30) that has a child of its own.
const shTree = `true & sh -c 'sleep 30 & exec sleep 30' & exec sleep 31`

func waitTreeSize(t *testing.T, root, n int) []Task {
	t.Helper()
	var ts []Task
	WaitFor(t, 5*time.Second, "the tree to have its tasks", func() bool {
		var err error
		ts, err = Tree(root)
		// Every live task must have exec'd sleep already: a tree caught
		// between fork and exec changes under the test.
		zombies, sleeping := 0, 0
		for _, x := range ts {
			switch {
			case x.Zombie():
				zombies++
			case x.Comm == "sleep":
				sleeping++
			}
		}
		return err == nil && len(ts) == n && zombies == 1 && sleeping == n-1
	})
	return ts
}

func TestTreeAndDiff(t *testing.T) {
	cmd := startShTree(t, shTree)
	root := cmd.Process.Pid
	ts := waitTreeSize(t, root, 4)
	t.Logf("tree:\n%s", FormatTree(ts))
	if ts[0].Pid != root || ts[0].Sid != root || ts[0].Pgid != root || ts[0].NSPid != root || ts[0].Threads != 1 {
		t.Errorf("root: %v", ts[0])
	}
	for _, x := range ts[1:] {
		if x.Sid != root {
			t.Errorf("%v: not in the root's session", x)
		}
	}
	if ts[3].PPid != ts[1].Pid && ts[3].PPid != ts[2].Pid {
		t.Errorf("the grandchild %v is not listed after its parent", ts[3])
	}
	if d := DiffTrees(ts, ts, false); len(d) != 0 {
		t.Errorf("DiffTrees(same) = %q", d)
	}
	changed := slices.Clone(ts)
	changed[1].Pgid++
	changed[2].State = 'Z'
	changed[3].Comm = "other"
	extra := append(slices.Clone(ts), Task{Pid: 99999, Comm: "x"})
	d := DiffTrees(extra, ts[:3], false)
	d = append(d, DiffTrees(ts, changed, false)...)
	for _, want := range []string{"pgid", "state", "comm", "is missing", "pid 99999"} {
		if !slices.ContainsFunc(d, func(s string) bool { return strings.Contains(s, want) }) {
			t.Errorf("DiffTrees did not report %q: %q", want, d)
		}
	}
	if d := DiffTrees(ts[:3], ts, false); len(d) != 1 || !strings.Contains(d[0], "extra task") {
		t.Errorf("DiffTrees with an extra task = %q", d)
	}
	WaitTree(t, root, ts, false, time.Second)
}

func TestDiffTreesByNSPid(t *testing.T) {
	want := []Task{{Pid: 100, PPid: 1, Pgid: 100, Sid: 100, NSPid: 100, State: 'S', Comm: "r"},
		{Pid: 101, PPid: 100, Pgid: 150, Sid: 100, NSPid: 101, State: 'S', Comm: "a"}, // group 150's leader is gone
		{Pid: 102, PPid: 100, Pgid: 100, Sid: 100, NSPid: 102, State: 'Z', Comm: "z"}}
	got := []Task{{Pid: 5000, PPid: 4999, Pgid: 5000, Sid: 5000, NSPid: 100, State: 'S', Comm: "r"},
		{Pid: 5001, PPid: 5000, Pgid: 5003, Sid: 5000, NSPid: 101, State: 'S', Comm: "a"},
		{Pid: 5002, PPid: 5000, Pgid: 5000, Sid: 5000, NSPid: 102, State: 'Z', Comm: "z"}}
	if d := DiffTrees(want, got, true); len(d) != 0 {
		t.Errorf("DiffTrees(copy) = %q", d)
	}
	got[2].PPid = 5001
	got[2].Pgid = 7777 // names no task of the copy, but want's does
	if d := DiffTrees(want, got, true); len(d) != 2 {
		t.Errorf("DiffTrees(changed copy) = %q, want a ppid and a pgid line", d)
	}
}

func TestTrackKillsAndReaps(t *testing.T) {
	RequireRootFor(t, "subreaper and pidfds of any process")
	if err := BecomeSubreaper(); err != nil {
		t.Fatal(err)
	}
	var pids []int
	var root *exec.Cmd
	t.Run("tracked", func(t *testing.T) {
		root = startShTree(t, shTree)
		ts := waitTreeSize(t, root.Process.Pid, 4)
		pids = Pids(ts)
		Track(t, pids[1:], pids[0])
	})
	// The subtest's cleanups ran: the root's own (Kill+Wait), Track's: the
	// orphans were re-parented to us, killed and reaped.
	for _, pid := range pids {
		if Exists(pid) {
			st, _ := ReadStat(pid)
			t.Errorf("pid %d still exists after Track's cleanup: %+v", pid, st)
		}
	}
}

func TestReapTasks(t *testing.T) {
	RequireRootFor(t, "subreaper")
	if err := BecomeSubreaper(); err != nil {
		t.Fatal(err)
	}
	root := startShTree(t, shTree)
	ts := waitTreeSize(t, root.Process.Pid, 4)
	// Kill the whole tree the way a dump does; the orphans come to us.
	for _, x := range ts {
		unix.Kill(x.Pid, unix.SIGKILL)
	}
	root.Wait()
	ReapTasks(t, Pids(ts[1:]))
	for _, x := range ts {
		if Exists(x.Pid) {
			t.Errorf("pid %d still exists", x.Pid)
		}
	}
}

func TestThreadsAndPss(t *testing.T) {
	ths, err := Threads(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if len(ths) < 2 || ths[0].Tid != os.Getpid() || ths[0].SigBlk == "" || ths[0].Comm == "" {
		t.Errorf("Threads(self) = %+v", ths)
	}
	if d := DiffThreads(ths, ths); len(d) != 0 {
		t.Errorf("DiffThreads(same) = %q", d)
	}
	changed := slices.Clone(ths)
	changed[0].SigPnd = "ffff"
	if d := DiffThreads(ths, changed[:1]); len(d) != len(ths) {
		t.Errorf("DiffThreads(changed) = %q", d)
	}
	pss, rss := PssKiB(t, []int{os.Getpid()})
	if pss <= 0 || rss < pss {
		t.Errorf("Pss %d KiB, Rss %d KiB", pss, rss)
	}
}

func TestBuildGoVictim(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Go program")
	}
	defer func() {
		RemoveBuilds()
		buildMu.Lock()
		buildDir, built = "", map[string]string{}
		buildMu.Unlock()
	}()
	bin := BuildGoVictim(t, "gocounter")
	if bin2 := BuildGoVictim(t, "gocounter"); bin2 != bin {
		t.Errorf("built twice: %s, %s", bin, bin2)
	}
	out, _ := exec.Command(bin).CombinedOutput()
	if !strings.Contains(string(out), "SETUP: usage") {
		t.Errorf("gocounter without args: %q", out)
	}
}

// fakeRestorePidNS stands in for `stasis restore --pidns`: it runs a
// process as pid 1 of a new pid namespace, writes its host pid to the
// pidfile and exits with its status (7 after a SIGTERM).
const fakeRestorePidNS = `#!/bin/sh
while [ $# -gt 0 ]; do [ "$1" = --pidfile ] && pidfile=$2; shift; done
unshare --pid --fork sh -c 'trap "exit 7" TERM; sleep 30 & wait' &
u=$!
c=
while [ -z "$c" ]; do c=$(cat /proc/$u/task/$u/children 2>/dev/null); done
echo $c > "$pidfile"
wait $u
`

func TestNSCopyHarness(t *testing.T) {
	RequireRootFor(t, "unshare --pid")
	RequireTool(t, "unshare")
	fake := filepath.Join(t.TempDir(), "fake-stasis")
	if err := os.WriteFile(fake, []byte(fakeRestorePidNS), 0o755); err != nil {
		t.Fatal(err)
	}
	buildMu.Lock()
	saved := stasis
	stasis = fake
	buildMu.Unlock()
	defer func() { buildMu.Lock(); stasis = saved; buildMu.Unlock() }()

	c := StartRestorePidNS(t, t.TempDir())
	c.WaitRestored(t, 1) // the fake's "root" is pid 1 of its namespace
	if c.HostPid <= 1 || Comm(c.HostPid) != "sh" {
		t.Errorf("host pid %d (comm %q)", c.HostPid, Comm(c.HostPid))
	}
	time.Sleep(100 * time.Millisecond) // let sh install its trap
	unix.Kill(c.HostPid, unix.SIGTERM)
	if code := c.Wait(t, 5*time.Second); code != 7 {
		t.Errorf("fake restore exited %d, want the copy's 7", code)
	}
}

// TestTrackKillsLaterIncarnation: a tracked process that is gone and whose
// pid now holds a process with the same comm started after Track (what a
// restore brings back) is killed by Track's cleanup.
func TestTrackKillsLaterIncarnation(t *testing.T) {
	RequireRootFor(t, "ns_last_pid")
	c1 := exec.Command("sleep", "30")
	if err := c1.Start(); err != nil {
		t.Fatal(err)
	}
	pid := c1.Process.Pid
	var c2 *exec.Cmd
	t.Run("tracked", func(t *testing.T) {
		Track(t, nil, pid)
		c1.Process.Kill()
		c1.Wait()
		// Bring the pid back the way a restore does, by asking for it.
		for i := 0; i < 20 && c2 == nil; i++ {
			if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
				SkipOrFail(t, "ns_last_pid: %v", err)
			}
			c := exec.Command("sleep", "30")
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			if c.Process.Pid == pid {
				c2 = c
			} else {
				c.Process.Kill()
				c.Wait()
			}
		}
		if c2 == nil {
			t.Skip("could not get the pid back (other processes fork meanwhile)")
		}
	})
	if c2 == nil {
		return
	}
	done := make(chan error, 1)
	go func() { done <- c2.Wait() }()
	select {
	case <-done:
		if ws := c2.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Errorf("the later incarnation ended with %v, want SIGKILL", ws)
		}
	case <-time.After(3 * time.Second):
		c2.Process.Kill()
		<-done
		t.Errorf("Track's cleanup did not kill the later incarnation of pid %d", pid)
	}
}
