package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/pstree"
	"github.com/stasis-cr/stasis/internal/testutil"
)

// Helpers of the application tests (mariadb_test.go, apache_test.go, java_test.go, mail_test.go, vnc_test.go,
// gcc_test.go): one checkpoint of a real program's tree by stasis or by
// the CRIU 4.2 reference, with the figures a user compares.

// ckptTool is who checkpoints: stasis, or CRIU 4.2 for the figures beside
// stasis' on the same program.
type ckptTool string

const (
	byStasis ckptTool = "stasis"
	byCRIU   ckptTool = "criu 4.2"
)

// ckptRun is the figures of one dump and restore.
type ckptRun struct {
	tool          ckptTool
	dump, restore time.Duration
	images        int64  // bytes in the images dir
	dir           string // the images, for checkImages
	// refused is why CRIU 4.2 refused to dump the tree, which it left
	// running: a figure beside stasis', not a failure of the test.
	refused string
}

func (r ckptRun) String() string {
	if r.refused != "" {
		return fmt.Sprintf("%s: dump refused: %s", r.tool, r.refused)
	}
	return fmt.Sprintf("%s: dump %v, restore %v, images %.1f MiB", r.tool,
		r.dump.Round(time.Millisecond), r.restore.Round(time.Millisecond), float64(r.images)/(1<<20))
}

// appRoundTrip dumps the tree of v with tool and flags (given to the dump
// and to the restore alike), which kills it, restores it detached and
// waits until the whole tree is back; stasis' images are to be checked
// after the restore (checkImages, later: decoding them takes seconds the
// program's clients should not wait). It returns the figures and the restored tree; if CRIU 4.2
// refuses the dump and leaves the tree running, it returns the figures
// with the reason, and no tree.
func appRoundTrip(t *testing.T, v *testutil.Victim, tool ckptTool, flags ...string) (ckptRun, []testutil.Task) {
	t.Helper()
	tree := testutil.TrackTree(t, v.Pid)
	dir := t.TempDir()
	run := ckptRun{tool: tool, dir: dir}
	switch tool {
	case byStasis:
		run.dump = dumpIdleRing(t, v.Pid, dir, flags...)
	case byCRIU:
		// criu 4.2's default network lock is iptables; this machine
		// locks with nftables, as stasis does.
		flags = append(flags, "--network-lock", "nftables")
		r := testutil.RunCRIU(t, 60*time.Second, dir, append([]string{"dump", "-t", strconv.Itoa(v.Pid), "-D", dir}, flags...)...)
		if r.Code != 0 && testutil.ProcessAlive(v.Pid) {
			run.refused = fmt.Sprintf("exit %d, %s", r.Code, firstLine(testutil.CriuErrors(r.Log)))
			t.Logf("%s", run)
			return run, nil
		}
		if r.Code != 0 {
			t.Fatalf("criu 4.2 dump of pid %d failed (exit %d): %s\n%s", v.Pid, r.Code, testutil.CriuErrors(r.Log), r)
		}
		run.dump = r.Took
	default:
		t.Fatalf("appRoundTrip: no tool %q", tool)
	}
	v.Reap(t)
	testutil.ReapTasks(t, testutil.Pids(tree[1:]))
	run.images = dirSize(t, dir)
	start := time.Now()
	if tool == byStasis {
		testutil.RestoreDetached(t, dir, v, flags...)
	} else {
		testutil.CriuRestoreDetached(t, dir, v, flags...)
	}
	got := waitAppTree(t, v.Pid, dir, tree, 10*time.Second)
	testutil.Track(t, testutil.Pids(got[1:]), v.Pid)
	run.restore = time.Since(start)
	t.Logf("%d process(es), %d thread(s), %s", len(tree), threadCount(tree), run)
	return run, got
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

// checkImages decodes the images of stasis' first run with both
// decoders: a later run of the same tree has images of the same kinds,
// and each costs seconds of `stasis show` and python on a loaded machine.
func checkImages(t *testing.T, runs []ckptRun) {
	t.Helper()
	for _, r := range runs {
		if r.tool == byStasis {
			testutil.CheckImages(t, r.dir)
			return
		}
	}
}

// ckptTools is stasis, then CRIU 4.2 if it is there (haveCRIU), then
// stasis again if again is set.
func ckptTools(t *testing.T, again bool) []ckptTool {
	t.Helper()
	tools := []ckptTool{byStasis}
	if haveCRIU(t) {
		tools = append(tools, byCRIU)
	}
	if again {
		tools = append(tools, byStasis)
	}
	return tools
}

// figures joins the figures of the runs, for the test's log.
func figures(runs []ckptRun) string {
	s := make([]string, len(runs))
	for i, r := range runs {
		s[i] = r.String()
	}
	return strings.Join(s, "; ")
}

// waitAppTree waits until the tree under root, restored from dir, is the
// dumped one: every process of the images back with its parent, group
// and session, the comm it had before the dump (want, read then), and
// every thread of the images back under its own tid. What a program
// changes by itself is not compared: the thread count (a server's pools
// start and end threads as clients come: mariadbd's InnoDB pool had 15 a
// second after a restore of 13, with its busy client), the processes it
// started or ended between the read of want and the freeze (the images
// say what was dumped), and children a restored process starts after the
// restore (a mail master's smtpd for the next client). If that does not
// happen within timeout, the differences fail the test.
func waitAppTree(t *testing.T, root int, dir string, want []testutil.Task, timeout time.Duration) []testutil.Task {
	t.Helper()
	d, err := images.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := pstree.ReadImage(d)
	if err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	var dumped []appTask
	for _, e := range entries {
		tids := make([]int, len(e.GetThreads()))
		for i, tid := range e.GetThreads() {
			tids[i] = int(tid)
		}
		dumped = append(dumped, appTask{testutil.Task{Pid: int(e.GetPid()), PPid: int(e.GetPpid()), Pgid: int(e.GetPgid()), Sid: int(e.GetSid())}, tids})
	}
	logged := map[int]bool{}
	return testutil.WaitTreeDiff(t, root, want, timeout, func(got []testutil.Task) []string {
		diff, started := appTreeDiff(want, got, dumped)
		for _, s := range started {
			if !logged[s.Pid] {
				logged[s.Pid] = true
				t.Logf("started by the restored program: %s", s)
			}
		}
		return diff
	})
}

// appTask is a process of the images and its threads.
type appTask struct {
	testutil.Task
	tids []int
}

// appTreeDiff is DiffTrees of the dumped processes (comm and zombie state
// from before, where read, thread counts from got) against got, with the
// dumped threads missing from got. Processes of got the images do not
// hold whose parent they do are the program's own, started after the
// restore: returned apart, not differences.
func appTreeDiff(before, got []testutil.Task, dumped []appTask) (diff []string, started []testutil.Task) {
	prev := map[int]testutil.Task{}
	for _, b := range before {
		prev[b.Pid] = b
	}
	now := map[int]testutil.Task{}
	for _, g := range got {
		now[g.Pid] = g
	}
	inImages := map[int]bool{}
	w := make([]testutil.Task, len(dumped))
	for i, d := range dumped {
		inImages[d.Pid] = true
		w[i] = d.Task
		if b, ok := prev[d.Pid]; ok {
			w[i].Comm, w[i].State = b.Comm, b.State
		} else { // started after want was read: whatever it is now
			w[i].Comm, w[i].State = now[d.Pid].Comm, now[d.Pid].State
		}
		w[i].Threads = now[d.Pid].Threads
	}
	var restored []testutil.Task
	for _, g := range got {
		if !inImages[g.Pid] && inImages[g.PPid] && !g.Zombie() {
			started = append(started, g)
			continue
		}
		restored = append(restored, g)
	}
	diff = testutil.DiffTrees(w, restored, false)
	for _, d := range dumped {
		for _, tid := range d.tids {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d/task/%d", d.Pid, tid)); err != nil {
				diff = append(diff, fmt.Sprintf("pid %d: its thread %d is not back", d.Pid, tid))
			}
		}
	}
	return diff, started
}
