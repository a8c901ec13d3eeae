package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// cgLayout is a set of cgroups of unique names a cgroup victim lives in,
// on this host's layout: cgroup v1 memory and pids where they are v1
// hierarchies (hybrid hosts), cgroup v2 for the rest and always for the
// thread (a threaded cgroup).
//
//	v2:     BASE (memory, pids enabled for its children where v2 has them)
//	        BASE/main (the process; memory.max, pids.max on pure v2)
//	        BASE/main/thr (threaded: one thread), BASE/kid (the child)
//	v1:     memory OWN/BASE/main (memory.limit_in_bytes), OWN/BASE/kid;
//	        pids OWN/BASE/main (pids.max)
type cgLayout struct {
	v2             string // cgroup2 mount point
	v2Base         string // "/BASE" in the v2 hierarchy
	memMnt, pidMnt string // v1 mount points, "" on pure v2
	frzMnt         string // the v1 freezer's mount point, with freezer only
	frzBase        string // OWN/BASE in the v1 freezer, the whole tree in it
	memBase        string // OWN/BASE in the v1 memory hierarchy
	pidBase        string
	dirs           []string // every directory made, parents first
	relFile        string   // the victim's -R file
}

var cgSeq atomic.Int32

// mounts returns the cgroup2 mount point and the v1 mount point of each
// controller, from /proc/self/mountinfo (only mounts of a hierarchy's root).
func cgMounts(t *testing.T) (v2 string, v1 map[string]string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v1 = map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 5 || len(b) < 3 || a[3] != "/" {
			continue
		}
		switch b[0] {
		case "cgroup2":
			if v2 == "" {
				v2 = a[4]
			}
		case "cgroup":
			for _, o := range strings.Split(b[2], ",") {
				// The first mount of a hierarchy is the host's: a criu
				// restoring beside this test mounts its cgroup yard
				// later, in a directory that goes away with it.
				if _, seen := v1[o]; !seen && (o == "memory" || o == "pids" || o == "freezer") {
					v1[o] = a[4]
				}
			}
		}
	}
	return v2, v1
}

// ownCgroup is the test process's cgroup in hierarchy name ("" for v2).
func ownCgroup(t *testing.T, name string) string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) == 3 && f[1] == name {
			return f[2]
		}
	}
	return "/"
}

func writeCg(t *testing.T, file, v string) {
	t.Helper()
	if err := os.WriteFile(file, []byte(v), 0); err != nil {
		t.Fatalf("write %q to %s: %v", v, file, err)
	}
}

// newCgLayout makes the cgroups; they are removed at the end of the test.
func newCgLayout(t *testing.T) *cgLayout { return newCgLayoutFreezer(t, false) }

// newCgLayoutFreezer is newCgLayout with, if freezer and the host has a
// v1 freezer, the tree in a v1 freezer cgroup OWN/BASE too.
func newCgLayoutFreezer(t *testing.T, freezer bool) *cgLayout {
	t.Helper()
	testutil.RequireRoot(t)
	v2, v1 := cgMounts(t)
	if v2 == "" {
		testutil.SkipOrFail(t, "no cgroup2 hierarchy mounted")
	}
	base := fmt.Sprintf("stasis-cg-%d-%d", os.Getpid(), cgSeq.Add(1))
	l := &cgLayout{v2: v2, v2Base: "/" + base, memMnt: v1["memory"], pidMnt: v1["pids"], relFile: filepath.Join(t.TempDir(), "relocated")}
	t.Cleanup(func() { l.remove(t) })
	mk := func(p string) {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatalf("make cgroup %s: %v", p, err)
		}
		l.dirs = append(l.dirs, p)
	}
	b := filepath.Join(v2, base)
	mk(b)
	ctls, _ := os.ReadFile(filepath.Join(b, "cgroup.controllers"))
	for _, c := range []string{"memory", "pids"} {
		if strings.Contains(string(ctls), c) {
			writeCg(t, filepath.Join(b, "cgroup.subtree_control"), "+"+c)
		}
	}
	mk(filepath.Join(b, "main"))
	mk(filepath.Join(b, "main", "thr"))
	writeCg(t, filepath.Join(b, "main", "thr", "cgroup.type"), "threaded")
	mk(filepath.Join(b, "kid"))
	if _, err := os.Stat(filepath.Join(b, "main", "memory.max")); err == nil {
		writeCg(t, filepath.Join(b, "main", "memory.max"), "268435456")
	}
	if _, err := os.Stat(filepath.Join(b, "main", "pids.max")); err == nil {
		writeCg(t, filepath.Join(b, "main", "pids.max"), "50")
	}
	if l.memMnt != "" {
		l.memBase = filepath.Join(ownCgroup(t, "memory"), base)
		m := filepath.Join(l.memMnt, l.memBase)
		mk(m)
		mk(filepath.Join(m, "main"))
		mk(filepath.Join(m, "kid"))
		writeCg(t, filepath.Join(m, "main", "memory.limit_in_bytes"), "268435456")
	}
	if freezer && v1["freezer"] != "" {
		l.frzMnt = v1["freezer"]
		l.frzBase = filepath.Join(ownCgroup(t, "freezer"), base)
		mk(filepath.Join(l.frzMnt, l.frzBase))
	}
	if l.pidMnt != "" {
		l.pidBase = filepath.Join(ownCgroup(t, "pids"), base)
		p := filepath.Join(l.pidMnt, l.pidBase)
		mk(p)
		mk(filepath.Join(p, "main"))
		writeCg(t, filepath.Join(p, "main", "pids.max"), "50")
	}
	return l
}

// victimArgs are the cgroup victim's options for the layout.
func (l *cgLayout) victimArgs() []string {
	b := filepath.Join(l.v2, l.v2Base)
	args := []string{"-R", l.relFile, "-p", filepath.Join(b, "main", "cgroup.procs"), "-t", filepath.Join(b, "main", "thr", "cgroup.threads"),
		"-k", filepath.Join(b, "kid", "cgroup.procs")}
	if l.memMnt != "" {
		m := filepath.Join(l.memMnt, l.memBase)
		args = append(args, "-p", filepath.Join(m, "main", "cgroup.procs"), "-k", filepath.Join(m, "kid", "cgroup.procs"),
			"-l", l.memMnt+":memory:memory.limit_in_bytes")
	} else {
		args = append(args, "-l", l.v2+"::memory.max")
	}
	if l.frzMnt != "" {
		args = append(args, "-p", filepath.Join(l.frzMnt, l.frzBase, "cgroup.procs"))
	}
	if l.pidMnt != "" {
		args = append(args, "-p", filepath.Join(l.pidMnt, l.pidBase, "main", "cgroup.procs"), "-l", l.pidMnt+":pids:pids.max")
	} else {
		args = append(args, "-l", l.v2+"::pids.max")
	}
	return args
}

// memLimit is the memory limit file of the main cgroup, as the layout has it.
func (l *cgLayout) memLimit() string {
	if l.memMnt != "" {
		return filepath.Join(l.memMnt, l.memBase, "main", "memory.limit_in_bytes")
	}
	return filepath.Join(l.v2, l.v2Base, "main", "memory.max")
}

// remove removes every cgroup of the layout (and what a restore made
// under it), deepest first; a cgroup a task just left may be busy a moment.
func (l *cgLayout) remove(t *testing.T) {
	var all []string
	tops := []string{filepath.Join(l.v2, l.v2Base)}
	for _, m := range [][2]string{{l.memMnt, l.memBase}, {l.pidMnt, l.pidBase}, {l.frzMnt, l.frzBase}} {
		if m[0] != "" {
			tops = append(tops, filepath.Join(m[0], m[1]))
		}
	}
	for _, top := range tops {
		filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				all = append(all, p)
			}
			return nil
		})
	}
	for i := len(all) - 1; i >= 0; i-- {
		// EBUSY while the killed tasks in it have not exited yet: seconds
		// on a loaded machine.
		var err error
		for deadline := time.Now().Add(testutil.MinWait); ; time.Sleep(10 * time.Millisecond) {
			if err = unix.Rmdir(all[i]); err == nil || errors.Is(err, unix.ENOENT) || !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
				break
			}
		}
		if err != nil && !errors.Is(err, unix.ENOENT) {
			t.Errorf("cgroup %s left behind: %v", all[i], err)
		}
	}
}

// exists tells which of the layout's cgroups exist.
func (l *cgLayout) existing() []string {
	var out []string
	for _, d := range l.dirs {
		if _, err := os.Stat(d); err == nil {
			out = append(out, d)
		}
	}
	return out
}

// cgroupOf is /proc/PID/task/TID/cgroup.
func cgroupOf(t *testing.T, pid, tid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/cgroup", pid, tid))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// cgSnapshot is every thread's and the child's cgroups of the victim.
func cgSnapshot(t *testing.T, pid int) map[string]string {
	out := map[string]string{}
	tids, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range tids {
		tid, _ := strconv.Atoi(e.Name())
		out[fmt.Sprintf("thread %d", i)] = cgroupOf(t, pid, tid)
	}
	for _, k := range testutil.Children(pid) {
		out["child"] = cgroupOf(t, k, k)
	}
	return out
}

func startCgVictim(t *testing.T, l *cgLayout) (*testutil.Victim, []testutil.Task, map[string]string) {
	t.Helper()
	v, tree := startTreeVictim(t, "cgroup", l.victimArgs()...)
	snap := cgSnapshot(t, v.Pid)
	if !strings.Contains(snap["thread 1"], l.v2Base+"/main/thr") || !strings.Contains(snap["child"], l.v2Base+"/kid") {
		t.Fatalf("the victim is not in its cgroups: %v", snap)
	}
	return v, tree, snap
}

// restoreCg restores the cgroup victim's tree with -d.
func restoreCg(t *testing.T, dir string, v *testutil.Victim, tree []testutil.Task, extra ...string) {
	t.Helper()
	testutil.RestoreDetached(t, dir, v, extra...)
	testutil.WaitTree(t, v.Pid, tree, false, 5*time.Second)
	testutil.Track(t, testutil.Pids(tree[1:]), v.Pid)
}

func sameSnapshot(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: %s in\n%s\nwant\n%s", what, k, got[k], w)
		}
	}
}

// TestCgroups: a process with a memory limit and pids.max (cgroup v1 here,
// v2 on a pure v2 host), a thread in a v2 threaded sub-cgroup and a child
// in a cgroup of its own is dumped, killed, its cgroups removed, and
// restored with the default --manage-cgroups (soft): the cgroups are made
// again with their limits, the process, thread and child are back in
// theirs, checked from outside and by the victim itself. cgroup.img is
// decoded by crit 4.2.
func TestCgroups(t *testing.T) {
	t.Parallel()
	l := newCgLayout(t)
	v, tree, before := startCgVictim(t, l)
	dir := t.TempDir()
	dumpTree(t, v, tree, dir)
	testutil.CheckWithCrit42(t, dir)
	l.remove(t)
	if left := l.existing(); len(left) > 0 {
		t.Fatalf("cgroups not removed before the restore: %v", left)
	}
	restoreCg(t, dir, v, tree)
	sameSnapshot(t, "after the restore", cgSnapshot(t, v.Pid), before)
	if b, err := os.ReadFile(l.memLimit()); err != nil || strings.TrimSpace(string(b)) != "268435456" {
		t.Errorf("memory limit of the restored cgroup: %q (%v), want 268435456", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(l.v2, l.v2Base, "main", "thr", "cgroup.type")); err != nil || strings.TrimSpace(string(b)) != "threaded" {
		t.Errorf("cgroup.type of the thread's cgroup: %q (%v), want threaded", b, err)
	}
	v.TermAndCheck(t)
}

// TestCgroupsFreeze: --freeze-cgroup freezes the tree's cgroup (v2) for
// the seize: with -R the tree runs on and the cgroup is thawed; killed, it
// is restored as it was.
func TestCgroupsFreeze(t *testing.T) {
	t.Parallel()
	l := newCgLayoutFreezer(t, true)
	v, tree, before := startCgVictim(t, l)
	cg := filepath.Join(l.v2, l.v2Base)
	if l.frzMnt != "" {
		// A v1 freezer as LXC gives it: its state goes into cgroup.img.
		frz := filepath.Join(l.frzMnt, l.frzBase)
		r := testutil.Dump(t, v.Pid, t.TempDir(), "--freeze-cgroup", frz, "-R")
		if log, _ := os.ReadFile(r.Log); !strings.Contains(string(log), "cgroup frozen and seized") {
			t.Errorf("the dump did not freeze %s", frz)
		}
		if b, _ := os.ReadFile(filepath.Join(frz, "freezer.state")); strings.TrimSpace(string(b)) != "THAWED" {
			t.Errorf("v1 freezer %s after the dump: %q, want THAWED", frz, b)
		}
		testutil.AssertRunning(t, v.Pid)
	}
	r := testutil.Dump(t, v.Pid, t.TempDir(), "--freeze-cgroup", cg, "-R")
	if log, _ := os.ReadFile(r.Log); !strings.Contains(string(log), "cgroup frozen and seized") {
		t.Errorf("the dump did not freeze %s (no \"cgroup frozen and seized\" in its log)", cg)
	}
	assertThawed(t, cg)
	testutil.AssertRunning(t, v.Pid)
	dir := t.TempDir()
	dumpTree(t, v, tree, dir, "--freeze-cgroup", cg)
	assertThawed(t, cg)
	restoreCg(t, dir, v, tree)
	sameSnapshot(t, "after the restore", cgSnapshot(t, v.Pid), before)
	v.TermAndCheck(t)
}

func assertThawed(t *testing.T, cg string) {
	t.Helper()
	b, _ := os.ReadFile(filepath.Join(cg, "cgroup.freeze"))
	e, _ := os.ReadFile(filepath.Join(cg, "cgroup.events"))
	if strings.TrimSpace(string(b)) != "0" || strings.Contains(string(e), "frozen 1") {
		t.Errorf("cgroup %s still frozen: cgroup.freeze %q, events %q", cg, b, e)
	}
}

// TestCgroupsRoot: --cgroup-root CTRL:PATH restores each controller's
// cgroups under another path; the victim expects its cgroups there.
func TestCgroupsRoot(t *testing.T) {
	t.Parallel()
	l := newCgLayout(t)
	v, tree, _ := startCgVictim(t, l)
	dir := t.TempDir()
	dumpTree(t, v, tree, dir)
	v2New := l.v2Base + "/moved"
	args := []string{"--cgroup-root", ":" + v2New}
	rel := []string{l.v2Base + "/main=" + v2New, l.v2Base + "/kid=" + v2New}
	if l.memMnt != "" {
		args = append(args, "--cgroup-root", "memory:"+l.memBase+"/moved")
		rel = append(rel, l.memBase+"/main="+l.memBase+"/moved", l.memBase+"/kid="+l.memBase+"/moved")
	}
	if l.pidMnt != "" {
		args = append(args, "--cgroup-root", "pids:"+l.pidBase+"/moved")
		rel = append(rel, l.pidBase+"/main="+l.pidBase+"/moved")
	}
	restoreCg(t, dir, v, tree, args...)
	if got := cgroupOf(t, v.Pid, v.Pid); !strings.Contains(got, v2New+"\n") {
		t.Errorf("restored under --cgroup-root: /proc/%d/cgroup\n%s\nwant %s", v.Pid, got, v2New)
	}
	// The victim expects its cgroups where criu moves them.
	if err := os.WriteFile(l.relFile, []byte(strings.Join(rel, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	v.TermAndCheck(t)
}

// TestCgroupsBadInput: a restore whose cgroups cannot be had fails naming
// what is missing and leaves no task and no cgroup behind: a missing
// --cgroup-yard, --manage-cgroups=none or props without the cgroups,
// strict with them; an interrupted restore removes the cgroups it made.
func TestCgroupsBadInput(t *testing.T) {
	t.Parallel()
	l := newCgLayout(t)
	v, tree, before := startCgVictim(t, l)
	dir := t.TempDir()
	dumpTree(t, v, tree, dir)

	yard := filepath.Join(t.TempDir(), "no-yard")
	testutil.AssertContains(t, testutil.RestoreFail(t, dir, "--cgroup-yard", yard), "cgroup yard "+yard, "does not exist")
	testutil.AssertContains(t, testutil.RestoreFail(t, dir, "--manage-cgroups=strict"), "exists already", "strict")

	l.remove(t)
	for _, mode := range []string{"none", "props"} {
		testutil.AssertContains(t, testutil.RestoreFail(t, dir, "--manage-cgroups="+mode), l.v2Base, "does not exist", "--manage-cgroups="+mode)
		if left := l.existing(); len(left) > 0 {
			t.Fatalf("--manage-cgroups=%s: cgroups made by a failed restore: %v", mode, left)
		}
	}
	testutil.AssertContains(t, testutil.RestoreFail(t, dir, "--manage-cgroups=bogus"), "--manage-cgroups", "bogus")
	testutil.AssertContains(t, testutil.RestoreFail(t, dir, "--cgroup-root", "relative"), "--cgroup-root", "absolute")

	// Interrupted once the tasks are in their cgroups: the cgroups the
	// restore made go with them.
	r := runStasisEnv(t, []string{hookEnv + "=restore-threads:INT"}, "restore", "-D", dir, "-d", "-v4", "-o", filepath.Join(t.TempDir(), "r.log"))
	if r.Code == 0 {
		t.Fatalf("interrupted restore exited 0\n%s", r)
	}
	testutil.AssertNoTask(t, v.Pid)
	if left := l.existing(); len(left) > 0 {
		t.Errorf("cgroups left by an interrupted restore: %v", left)
	}

	// The images are still good.
	restoreCg(t, dir, v, tree)
	sameSnapshot(t, "after the restore", cgSnapshot(t, v.Pid), before)
	v.TermAndCheck(t)
}

// TestCgroupsCross: the cgroup victim dumped by criu 4.2 and restored by
// stasis, and the other way round, its cgroups removed in between: both
// tools make them again from the other's cgroup.img, with the limits.
func TestCgroupsCross(t *testing.T) {
	testutil.RequireCRIU(t)
	t.Parallel()
	for _, way := range []string{"criu-to-stasis", "stasis-to-criu"} {
		t.Run(way, func(t *testing.T) {
			l := newCgLayout(t)
			v, tree, before := startCgVictim(t, l)
			dir := t.TempDir()
			if way == "criu-to-stasis" {
				testutil.CriuDump(t, v.Pid, dir)
				v.Reap(t)
				testutil.ReapTasks(t, testutil.Pids(tree[1:]))
			} else {
				dumpTree(t, v, tree, dir)
			}
			l.remove(t)
			if way == "criu-to-stasis" {
				restoreCg(t, dir, v, tree)
			} else {
				testutil.CriuRestoreDetached(t, dir, v)
				testutil.WaitTree(t, v.Pid, tree, false, 5*time.Second)
				testutil.Track(t, testutil.Pids(tree[1:]), v.Pid)
			}
			sameSnapshot(t, way, cgSnapshot(t, v.Pid), before)
			if b, err := os.ReadFile(l.memLimit()); err != nil || strings.TrimSpace(string(b)) != "268435456" {
				t.Errorf("%s: memory limit of the restored cgroup: %q (%v), want 268435456", way, b, err)
			}
			v.TermAndCheck(t)
		})
	}
}

// TestCgroupsNamespace: the victim unshares a cgroup namespace rooted at
// BASE (in every hierarchy it has a BASE in) and then enters BASE/main:
// it sees its cgroups relative to BASE. Dumped, its cgroups removed and
// restored, it is in a cgroup namespace of its own again, rooted at BASE
// (it sees the same paths), in the same cgroups (seen from the host).
func TestCgroupsNamespace(t *testing.T) {
	t.Parallel()
	l := newCgLayout(t)
	args := []string{"-P", filepath.Join(l.v2, l.v2Base, "cgroup.procs")}
	if l.memMnt != "" {
		args = append(args, "-P", filepath.Join(l.memMnt, l.memBase, "cgroup.procs"))
	}
	if l.pidMnt != "" {
		args = append(args, "-P", filepath.Join(l.pidMnt, l.pidBase, "cgroup.procs"))
	}
	va := l.victimArgs()
	for i := 0; i < len(va); i += 2 {
		if va[i] != "-l" { // limits are read through the host's paths
			args = append(args, va[i], va[i+1])
		}
	}
	v, tree := startTreeVictim(t, "cgroup", args...)
	before := cgSnapshot(t, v.Pid)
	nsBefore := nsInode(t, v.Pid, "cgroup")
	if nsBefore == nsInode(t, os.Getpid(), "cgroup") {
		t.Fatal("the victim is in the test's cgroup namespace")
	}
	inside, _ := os.ReadFile(v.Log)
	dir := t.TempDir()
	dumpTree(t, v, tree, dir)
	l.remove(t)
	restoreCg(t, dir, v, tree)
	sameSnapshot(t, "after the restore", cgSnapshot(t, v.Pid), before)
	if got := nsInode(t, v.Pid, "cgroup"); got == nsInode(t, os.Getpid(), "cgroup") {
		t.Errorf("restored pid %d is in the restoring process's cgroup namespace", v.Pid)
	}
	if k := testutil.Children(v.Pid); len(k) != 1 || nsInode(t, k[0], "cgroup") != nsInode(t, v.Pid, "cgroup") {
		t.Errorf("the child is not in the root's cgroup namespace")
	}
	_ = inside
	v.TermAndCheck(t)
}

func nsInode(t *testing.T, pid int, kind string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/%s", pid, kind), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestCgroupsModes: the cgroups still exist, with a memory limit changed
// since the dump. --manage-cgroups=full writes the dumped limit back (the
// victim checks it); ignore leaves the tasks in the restoring process's
// cgroups.
func TestCgroupsModes(t *testing.T) {
	t.Parallel()
	l := newCgLayout(t)
	v, tree, before := startCgVictim(t, l)
	dir := t.TempDir()
	dumpTree(t, v, tree, dir)

	restoreCg(t, dir, v, tree, "--manage-cgroups=ignore")
	own := cgroupOf(t, os.Getpid(), os.Getpid())
	if got := cgroupOf(t, v.Pid, v.Pid); got != own {
		t.Errorf("--manage-cgroups=ignore: restored in\n%s\nwant the test's own\n%s", got, own)
	}
	for _, k := range testutil.Pids(tree[1:]) {
		unix.Kill(k, unix.SIGKILL)
	}
	v.Signal(t, unix.SIGKILL)
	v.Reap(t)
	testutil.ReapTasks(t, testutil.Pids(tree[1:]))

	writeCg(t, l.memLimit(), "134217728")
	restoreCg(t, dir, v, tree, "--manage-cgroups=full")
	sameSnapshot(t, "--manage-cgroups=full", cgSnapshot(t, v.Pid), before)
	if b, _ := os.ReadFile(l.memLimit()); strings.TrimSpace(string(b)) != "268435456" {
		t.Errorf("--manage-cgroups=full: memory limit %q, want the dumped 268435456", b)
	}
	v.TermAndCheck(t)
}
