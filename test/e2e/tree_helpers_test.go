package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/checksum"
	"github.com/stasis-cr/stasis/internal/testutil"
	"golang.org/x/sys/unix"
)

// Helpers of the process-tree and multithreading tests (threads_test.go,
// tree_test.go, pidns_test.go, tree_failure_test.go, ...).

// startTreeVictim starts a victim that forks, waits until it is ready and
// returns it with its tree, every task of which the test kills and reaps
// when it ends.
func startTreeVictim(t *testing.T, name string, args ...string) (*testutil.Victim, []testutil.Task) {
	t.Helper()
	v := testutil.StartVictim(t, name, args...)
	v.WaitReady(t)
	tree := testutil.TrackTree(t, v.Pid)
	t.Logf("%s tree:\n%s", name, testutil.FormatTree(tree))
	return v, tree
}

// dumpTree dumps (and so kills) the tree of v and waits until all its pids
// are free: v's is reaped by v, the others, re-parented to the test process
// (the subreaper) once the root is gone, are reaped here.
func dumpTree(t *testing.T, v *testutil.Victim, tree []testutil.Task, dir string, extra ...string) {
	t.Helper()
	testutil.Dump(t, v.Pid, dir, extra...)
	v.Reap(t)
	testutil.ReapTasks(t, testutil.Pids(tree[1:]))
	if got, want := len(testutil.ImagePids(t, dir)), len(tree); got != want {
		t.Errorf("pstree.img lists %d processes, the tree had %d", got, want)
	}
}

// restoreTree restores DIR with -d and waits until the restored tree of v
// is the dumped one: same pids, parents, groups, sessions, comms, thread
// counts, zombies. The new tasks are tracked for the test's cleanup.
func restoreTree(t *testing.T, dir string, v *testutil.Victim, want []testutil.Task) []testutil.Task {
	t.Helper()
	testutil.RestoreDetached(t, dir, v)
	got := testutil.WaitTree(t, v.Pid, want, false, 5*time.Second)
	testutil.Track(t, testutil.Pids(got[1:]), v.Pid)
	return got
}

// assertTreeGone fails the test if any pid of tree is still held.
func assertTreeGone(t *testing.T, tree []testutil.Task, more ...int) {
	t.Helper()
	for _, pid := range append(testutil.Pids(tree), more...) {
		testutil.AssertNoTask(t, pid)
	}
}

var numberedImage = regexp.MustCompile(`^(.*)-([0-9]+)\.img$`)

// checkImageSample decodes, with both decoders (testutil.CheckImages), the
// images of DIR that are not per task, and the per-task ones of the root
// and of two other tasks only: decoding thousands of them would take
// minutes.
func checkImageSample(t *testing.T, dir string, root int) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	byPrefix := map[string][]int{}
	for _, e := range ents {
		if m := numberedImage.FindStringSubmatch(e.Name()); m != nil {
			n, _ := strconv.Atoi(m[2])
			byPrefix[m[1]] = append(byPrefix[m[1]], n)
		}
	}
	keep := map[string]bool{}
	for prefix, ns := range byPrefix {
		slices.Sort(ns)
		for i, n := range ns {
			if i < 3 || n == root {
				keep[prefix+"-"+strconv.Itoa(n)+".img"] = true
			}
		}
	}
	sample := copyDir(t, dir, func(name string) bool {
		return strings.HasSuffix(name, ".img") && (!numberedImage.MatchString(name) || keep[name])
	})
	testutil.CheckImages(t, sample)
}

// logPid finds "WORD <pid>" in the victim's log, e.g. "group D 1234".
func logPid(t *testing.T, v *testutil.Victim, re string) int {
	t.Helper()
	b, _ := os.ReadFile(v.Log)
	m := regexp.MustCompile(re).FindSubmatch(b)
	if m == nil {
		t.Fatalf("victim log has no match for %q\n%s", re, v.LogTail())
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// killForkingTree is a cleanup for a victim that keeps forking (bash, the
// churn victim): stopping the root first, so that it cannot fork any more,
// then tracking its tree, kills every task the test left behind, including
// children forked after the last listing. The root is killed, never reaped.
func killForkingTree(t *testing.T, v *testutil.Victim) {
	t.Helper()
	t.Cleanup(func() {
		if !testutil.ProcessAlive(v.Pid) {
			return
		}
		unix.Kill(v.Pid, unix.SIGSTOP)
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			st, err := testutil.Status(v.Pid)
			if err != nil || strings.HasPrefix(st["State"], "T") || strings.HasPrefix(st["State"], "Z") {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		ts, err := testutil.Tree(v.Pid)
		if err != nil {
			return
		}
		pids := testutil.Pids(ts[1:])
		unix.Kill(v.Pid, unix.SIGKILL)
		for _, pid := range pids {
			unix.Kill(pid, unix.SIGKILL)
		}
		for _, pid := range pids {
			deadline := time.Now().Add(2 * time.Second)
			for testutil.Exists(pid) && time.Now().Before(deadline) {
				if st, err := testutil.ReadStat(pid); err == nil && st.PPid == os.Getpid() && st.State == 'Z' {
					var ws unix.WaitStatus
					unix.Wait4(pid, &ws, unix.WALL|unix.WNOHANG, nil)
					continue
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	})
}

// readIntFile reads a decimal number from a file another process rewrites
// (truncate, then write): an empty or partial read is retried.
func readIntFile(t *testing.T, path string) int {
	t.Helper()
	var last string
	for i := 0; i < 100; i++ {
		b, err := os.ReadFile(path)
		if err == nil {
			last = string(b)
			if strings.HasSuffix(last, "\n") {
				if n, err := strconv.Atoi(strings.TrimSpace(last)); err == nil {
					return n
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s holds %q", path, last)
	return 0
}

// threadState is what a failed dump must leave as it was in one thread:
// its blocked and pending signals (its own queue and its process's shared
// one). Registers of a running thread cannot be compared from outside; the
// victims check their own (threads.c: r12-r14, xmm3, xmm8 of the spinning
// workers, restarted futex waits) when they get SIGTERM.
type threadState struct {
	sigBlk, sigPnd, shdPnd string
}

// treeSnapshot maps every live task of a tree to its threads' states.
type treeSnapshot struct {
	root  int
	tasks map[int]map[int]threadState // pid -> tid -> state
}

// snapshotTree records the threads of every live task of the tree of pid,
// to compare with assertUntouched after a dump that fails.
func snapshotTree(t *testing.T, pid int) treeSnapshot {
	t.Helper()
	snap, errs := readTreeState(pid)
	for _, e := range errs {
		t.Errorf("before the dump: %s", e)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	return snap
}

// readTreeState reads the tree of pid, with what is wrong in it for a tree
// that runs untouched: a thread stopped or traced.
func readTreeState(pid int) (treeSnapshot, []string) {
	snap := treeSnapshot{root: pid, tasks: map[int]map[int]threadState{}}
	ts, err := testutil.Tree(pid)
	if err != nil {
		return snap, []string{err.Error()}
	}
	var errs []string
	for _, x := range ts {
		if x.Zombie() {
			continue
		}
		ths, err := testutil.Threads(x.Pid)
		if err != nil {
			errs = append(errs, fmt.Sprintf("task %d: %v", x.Pid, err))
			continue
		}
		m := map[int]threadState{}
		for _, th := range ths {
			st, err := testutil.Status(th.Tid)
			if err != nil {
				errs = append(errs, fmt.Sprintf("task %d thread %d: %v", x.Pid, th.Tid, err))
				continue
			}
			if st["TracerPid"] != "0" || st["State"] == "" || strings.ContainsAny(st["State"][:1], "TtZX") {
				errs = append(errs, fmt.Sprintf("task %d thread %d is %q with TracerPid %s", x.Pid, th.Tid, st["State"], st["TracerPid"]))
			}
			m[th.Tid] = threadState{sigBlk: st["SigBlk"], sigPnd: st["SigPnd"], shdPnd: st["ShdPnd"]}
		}
		snap.tasks[x.Pid] = m
	}
	return snap, errs
}

// diff lists how the tree differs from the snapshot before.
func (before treeSnapshot) diff(after treeSnapshot) []string {
	var d []string
	for pid, ths := range before.tasks {
		now, ok := after.tasks[pid]
		if !ok {
			d = append(d, fmt.Sprintf("task %d is gone", pid))
			continue
		}
		if len(now) != len(ths) {
			d = append(d, fmt.Sprintf("task %d has %d threads, it had %d", pid, len(now), len(ths)))
		}
		for tid, was := range ths {
			is, ok := now[tid]
			switch {
			case !ok:
				d = append(d, fmt.Sprintf("task %d thread %d is gone", pid, tid))
			case is != was:
				d = append(d, fmt.Sprintf("task %d thread %d: SigBlk/SigPnd/ShdPnd %s/%s/%s, they were %s/%s/%s",
					pid, tid, is.sigBlk, is.sigPnd, is.shdPnd, was.sigBlk, was.sigPnd, was.shdPnd))
			}
		}
	}
	for pid := range after.tasks {
		if _, ok := before.tasks[pid]; !ok {
			d = append(d, fmt.Sprintf("task %d is new in the tree", pid))
		}
	}
	sort.Strings(d)
	return d
}

// assertUntouched fails the test unless every task and thread of the tree
// runs as it did at the snapshot (a failed dump must leave the tree so):
// not stopped, not traced, the same tasks and threads, each thread with
// its signal mask and pending signals. The victims' own self-check at
// SIGTERM covers the rest (registers, memory, interrupted syscalls).
func assertUntouched(t *testing.T, before treeSnapshot) {
	t.Helper()
	var problems []string
	deadline := time.Now().Add(testutil.MinWait)
	for {
		after, errs := readTreeState(before.root)
		problems = append(errs, before.diff(after)...)
		if len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("the tree of pid %d is not as it was before the failed dump:\n%s", before.root, strings.Join(problems, "\n"))
}

// assertRunning fails the test unless every task and thread of the tree
// of pid runs: not stopped, not traced (a dump that was stopped or refused
// must leave it so). assertUntouched also compares it with a snapshot.
func assertRunning(t *testing.T, pid int) {
	t.Helper()
	var errs []string
	for deadline := time.Now().Add(testutil.MinWait); ; time.Sleep(20 * time.Millisecond) {
		if _, errs = readTreeState(pid); len(errs) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, e := range errs {
		t.Errorf("the tree of pid %d does not run untouched: %s", pid, e)
	}
}

// statusKeys are the credential and seccomp lines of /proc/TID/status.
var statusKeys = []string{"Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
	"NoNewPrivs", "Seccomp", "Seccomp_filters", "Name"}

// credsOf maps every thread of every task of the tree to its credential
// lines of /proc/TID/status.
func credsOf(t *testing.T, tree []testutil.Task) map[int]string {
	t.Helper()
	out := map[int]string{}
	for _, x := range tree {
		ths, err := testutil.Threads(x.Pid)
		if err != nil {
			t.Fatal(err)
		}
		for _, th := range ths {
			st, err := testutil.Status(th.Tid)
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			for _, k := range statusKeys {
				b.WriteString(k + ": " + st[k] + "; ")
			}
			out[th.Tid] = b.String()
		}
	}
	return out
}

// countIn counts the occurrences of s in the victim's log.
func countIn(v *testutil.Victim, s string) int {
	b, _ := os.ReadFile(v.Log)
	return strings.Count(string(b), s)
}

// imageDirNoChecksums copies a dump without stasis's checksum manifest, so
// that damage done to an image is not caught up front.
func imageDirNoChecksums(t *testing.T, dir string) string {
	t.Helper()
	return copyDir(t, dir, func(name string) bool { return name != checksum.FileName })
}

// fileOf is the path of name in dir.
func fileOf(dir, name string) string { return filepath.Join(dir, name) }
