package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	imgdir "github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/proc"
)

// Task is one process of a tree as /proc shows it to the test process: pid,
// ppid, pgid and sid are numbers of the test's (host) pid namespace; NSPid
// is the pid in the task's own, innermost namespace (the last field of
// NSpid in /proc/PID/status), equal to Pid outside any child namespace.
type Task struct {
	Pid, PPid, Pgid, Sid int
	NSPid                int
	State                byte // R, S, Z, ...
	Comm                 string
	Threads              int
}

// Zombie tells whether the task has exited and waits to be reaped.
func (t Task) Zombie() bool { return t.State == 'Z' }

func (t Task) String() string {
	s := fmt.Sprintf("pid %d ppid %d pgid %d sid %d %c %q threads %d", t.Pid, t.PPid, t.Pgid, t.Sid, t.State, t.Comm, t.Threads)
	if t.NSPid != t.Pid {
		s += fmt.Sprintf(" (pid %d in its namespace)", t.NSPid)
	}
	return s
}

// readTask reads /proc/PID/stat and the NSpid line of /proc/PID/status.
func readTask(pid int) (Task, error) {
	st, err := proc.ReadStat(pid)
	if err != nil {
		return Task{}, err
	}
	t := Task{Pid: pid, State: st.State, PPid: st.PPid, Pgid: st.Pgrp, Sid: st.Session,
		Threads: st.NumThreads, Comm: st.Comm, NSPid: pid}
	return t, nil
}

// readDetails completes t with what costs a read per thread: its threads
// (io_uring's workers come and go with the process's I/O: not its own)
// and its pid in its own pid namespace. Tree does it only for the tasks
// of the tree, not for every process of the machine (some have 10,000
// threads).
func readDetails(t *Task) {
	if tids, err := proc.Tasks(t.Pid); err == nil {
		t.Threads = len(tids)
	}
	if status, err := proc.ReadStatus(t.Pid); err == nil && len(status.NSpid) > 0 {
		t.NSPid = status.NSpid[len(status.NSpid)-1]
	}
}

// Tree lists root and all its descendants, zombies included, parents
// before children and siblings by pid, from one scan of /proc.
func Tree(root int) ([]Task, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	kids := map[int][]Task{}
	var top *Task
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		t, err := readTask(pid)
		if err != nil {
			continue // gone meanwhile
		}
		if pid == root {
			top = &t
		}
		kids[t.PPid] = append(kids[t.PPid], t)
	}
	if top == nil {
		return nil, fmt.Errorf("pid %d: no such task", root)
	}
	out := []Task{*top}
	for i := 0; i < len(out); i++ {
		c := kids[out[i].Pid]
		slices.SortFunc(c, func(a, b Task) int { return a.Pid - b.Pid })
		out = append(out, c...)
		readDetails(&out[i])
	}
	return out, nil
}

// MustTree is Tree that fails the test on error.
func MustTree(t testing.TB, root int) []Task {
	t.Helper()
	ts, err := Tree(root)
	if err != nil {
		t.Fatalf("tree of %d: %v", root, err)
	}
	return ts
}

// Pids lists the pids of tasks.
func Pids(ts []Task) []int {
	out := make([]int, len(ts))
	for i, t := range ts {
		out[i] = t.Pid
	}
	return out
}

// FormatTree is a listing of tasks, one per line, for logs.
func FormatTree(ts []Task) string {
	var b strings.Builder
	for _, t := range ts {
		fmt.Fprintf(&b, "  %s\n", t)
	}
	return b.String()
}

// DiffTrees compares two listings of the same tree, matched by pid: every
// pid of want must be in got with the same parent, group, session, comm,
// thread count and zombie state, and got must hold no other pid. It returns
// one line per difference.
//
// With byNSPid, got is a copy restored in another pid namespace: its tasks
// are matched by NSPid, and its ppid, pgid and sid (host numbers) are
// translated through the copy's own pids first; one that names no task of
// the copy (a group or session whose leader is gone) is compared only if
// want's is not in want either.
func DiffTrees(want, got []Task, byNSPid bool) []string {
	key := func(t Task) int {
		if byNSPid {
			return t.NSPid
		}
		return t.Pid
	}
	g := map[int]Task{}
	host2ns := map[int]int{}
	for _, t := range got {
		g[key(t)] = t
		host2ns[t.Pid] = t.NSPid
	}
	inWant := map[int]bool{}
	for _, t := range want {
		inWant[t.Pid] = true
	}
	var out []string
	for i, w := range want {
		a, ok := g[w.Pid]
		if !ok {
			out = append(out, fmt.Sprintf("pid %d (%q) is missing", w.Pid, w.Comm))
			continue
		}
		delete(g, w.Pid)
		field := func(name string, wv, gv int, isRoot bool) {
			if byNSPid {
				if n, ok := host2ns[gv]; ok {
					gv = n
				} else if isRoot || !inWant[wv] {
					return // no task of the copy: a gone leader's id, the root's parent
				}
			}
			if wv != gv {
				out = append(out, fmt.Sprintf("pid %d (%q): %s %d, want %d", w.Pid, w.Comm, name, gv, wv))
			}
		}
		if i > 0 { // the root's parent is whoever restored it
			field("ppid", w.PPid, a.PPid, false)
		}
		field("pgid", w.Pgid, a.Pgid, i == 0)
		field("sid", w.Sid, a.Sid, i == 0)
		if a.Comm != w.Comm {
			out = append(out, fmt.Sprintf("pid %d: comm %q, want %q", w.Pid, a.Comm, w.Comm))
		}
		if a.Zombie() != w.Zombie() {
			out = append(out, fmt.Sprintf("pid %d (%q): state %c, want %c", w.Pid, w.Comm, a.State, w.State))
		}
		if a.Threads != w.Threads {
			out = append(out, fmt.Sprintf("pid %d (%q): %d threads, want %d", w.Pid, w.Comm, a.Threads, w.Threads))
		}
	}
	extra := make([]int, 0, len(g))
	for k := range g {
		extra = append(extra, k)
	}
	slices.Sort(extra)
	for _, k := range extra {
		out = append(out, fmt.Sprintf("extra task: %s", g[k]))
	}
	return out
}

// WaitTree waits until the tree under root (a restored one) matches want
// (see DiffTrees). If it does not within timeout (at least MinWait), it reports the
// differences as an error (the test goes on: the victims' own checks say
// more) and returns the tree as last read; it fails the test at once only
// if root is gone.
func WaitTree(t testing.TB, root int, want []Task, byNSPid bool, timeout time.Duration) []Task {
	t.Helper()
	return WaitTreeDiff(t, root, want, timeout, func(got []Task) []string { return DiffTrees(want, got, byNSPid) })
}

// WaitTreeDiff is WaitTree with the differences given by diff.
func WaitTreeDiff(t testing.TB, root int, want []Task, timeout time.Duration, diff func(got []Task) []string) []Task {
	t.Helper()
	timeout = max(timeout, MinWait)
	deadline := time.Now().Add(timeout)
	for {
		got, err := Tree(root)
		var d []string
		if err != nil {
			d = []string{err.Error()}
		} else {
			d = diff(got)
		}
		if len(d) == 0 {
			return got
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("the restored tree of %d: %v", root, err)
			}
			t.Errorf("the restored tree of %d differs from the dumped one after %v:\n  %s\n--- dumped ---\n%s--- restored ---\n%s",
				root, timeout, strings.Join(d, "\n  "), FormatTree(want), FormatTree(got))
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Track makes the test kill pids when it ends, through pidfds opened now
// (a pid reused by then is left alone), and reap those of them that end up
// as zombie children of the test process (orphans re-parented to it, the
// subreaper). A tracked process that is gone by then may have come back
// under the same pid (a restore): a task holding the pid with the same comm
// and started after Track is killed too. Pids in noReap are killed but
// never waited for: pass there a pid whose exit status another helper
// collects (a Victim's current incarnation, a stasis process), since
// reaping it would steal it.
func Track(t testing.TB, pids []int, noReap ...int) {
	t.Helper()
	type tracked struct {
		pid, fd int
		comm    string
	}
	since := bootTicks()
	var ts []tracked
	for _, pid := range append(slices.Clone(noReap), pids...) {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue // already gone
		}
		ts = append(ts, tracked{pid, fd, Comm(pid)})
	}
	t.Cleanup(func() {
		for _, x := range ts {
			if unix.PidfdSendSignal(x.fd, unix.SIGKILL, nil, 0) != nil {
				killIncarnation(x.pid, x.comm, since)
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for _, x := range ts {
			if !slices.Contains(noReap, x.pid) {
				reapOrWait(x.pid, time.Until(deadline))
			}
			unix.Close(x.fd)
		}
	})
}

// bootTicks is now in the unit of /proc/PID/stat's starttime: clock ticks
// (USER_HZ, 100 on Linux) since boot.
func bootTicks() uint64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return uint64(ts.Sec)*100 + uint64(ts.Nsec)/10000000
}

// killIncarnation kills the task holding pid if its comm is comm and it
// started at or after since (ticks since boot): a later incarnation of a
// tracked process. The pidfd is opened before the check, so the pid cannot
// be recycled between the check and the kill.
func killIncarnation(pid int, comm string, since uint64) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	start, err := StatField(pid, 22)
	if err != nil {
		return
	}
	if n, err := strconv.ParseUint(start, 10, 64); err == nil && n+1 >= since && Comm(pid) == comm {
		unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
	}
}

// TrackTree tracks (see Track) every task of root's tree; root itself is
// killed but not reaped (its Victim collects its status).
func TrackTree(t testing.TB, root int) []Task {
	t.Helper()
	ts := MustTree(t, root)
	Track(t, Pids(ts[1:]), root)
	return ts
}

// reapOrWait waits until pid is gone, reaping it if it is a zombie child of
// the test process; it reports whether the pid is free.
func reapOrWait(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for Exists(pid) {
		if st, err := ReadStat(pid); err == nil && st.PPid == os.Getpid() && st.State == 'Z' {
			var ws unix.WaitStatus
			unix.Wait4(pid, &ws, unix.WALL|unix.WNOHANG, nil)
			continue
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// ReapTasks waits until every pid is free (a dump killed the tree): members
// re-parented to the test process are reaped. The root, whose status its
// Victim collects, must not be among them (use Victim.Reap for it).
func ReapTasks(t testing.TB, pids []int) {
	t.Helper()
	for _, pid := range pids {
		if !reapOrWait(pid, 10*time.Second) {
			st, _ := ReadStat(pid)
			t.Fatalf("pid %d is still held after the dump (comm %q, state %c, ppid %d)", pid, st.Comm, st.State, st.PPid)
		}
	}
}

// ImagePids lists the pids of the processes in DIR/pstree.img, in image
// order (the order restore creates them in).
func ImagePids(t testing.TB, dir string) []int {
	t.Helper()
	d, err := imgdir.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	es, err := imgdir.ReadAll(d, "pstree.img", func() *pstree.PstreeEntry { return &pstree.PstreeEntry{} })
	if err != nil {
		t.Fatalf("read pstree.img: %v", err)
	}
	out := make([]int, len(es))
	for i, e := range es {
		out[i] = int(e.GetPid())
	}
	return out
}

// ImageTree decodes DIR/pstree.img.
func ImageTree(t testing.TB, dir string) []*pstree.PstreeEntry {
	t.Helper()
	return ReadImage(t, dir, "pstree.img", func() *pstree.PstreeEntry { return &pstree.PstreeEntry{} })
}

// ReadImage decodes every entry of image NAME of DIR.
func ReadImage[T proto.Message](t testing.TB, dir, name string, newEntry func() T) []T {
	t.Helper()
	d, err := imgdir.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	es, err := imgdir.ReadAll(d, name, newEntry)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return es
}

// ThreadInfo is one thread as /proc/PID/task/TID/status shows it.
type ThreadInfo struct {
	Tid            int
	Comm           string
	State          string
	SigBlk, SigPnd string
}

// Threads lists the threads of pid by tid.
func Threads(pid int) ([]ThreadInfo, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, err
	}
	var out []ThreadInfo
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := Status(tid)
		if err != nil {
			// Status(tid) reads /proc/TID/status, which exists for every
			// thread even though /proc does not list it.
			st, err = statusAt(filepath.Join("/proc", strconv.Itoa(pid), "task", e.Name(), "status"))
			if err != nil {
				continue
			}
		}
		out = append(out, ThreadInfo{Tid: tid, Comm: st["Name"], State: st["State"], SigBlk: st["SigBlk"], SigPnd: st["SigPnd"]})
	}
	slices.SortFunc(out, func(a, b ThreadInfo) int { return a.Tid - b.Tid })
	return out, nil
}

func statusAt(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m, nil
}

// DiffThreads compares two thread listings by tid: the same tids, each
// with the same name, blocked mask and thread-pending signals.
func DiffThreads(want, got []ThreadInfo) []string {
	g := map[int]ThreadInfo{}
	for _, x := range got {
		g[x.Tid] = x
	}
	var out []string
	for _, w := range want {
		a, ok := g[w.Tid]
		if !ok {
			out = append(out, fmt.Sprintf("tid %d (%q) is missing", w.Tid, w.Comm))
			continue
		}
		delete(g, w.Tid)
		if a.Comm != w.Comm {
			out = append(out, fmt.Sprintf("tid %d: name %q, want %q", w.Tid, a.Comm, w.Comm))
		}
		if a.SigBlk != w.SigBlk {
			out = append(out, fmt.Sprintf("tid %d (%q): SigBlk %s, want %s", w.Tid, w.Comm, a.SigBlk, w.SigBlk))
		}
		if a.SigPnd != w.SigPnd {
			out = append(out, fmt.Sprintf("tid %d (%q): SigPnd %s, want %s", w.Tid, w.Comm, a.SigPnd, w.SigPnd))
		}
	}
	for tid, x := range g {
		out = append(out, fmt.Sprintf("extra thread: tid %d (%q)", tid, x.Comm))
	}
	slices.Sort(out)
	return out
}

// PssKiB sums "Pss:" of /proc/PID/smaps_rollup over pids, in KiB; also Rss.
func PssKiB(t testing.TB, pids []int) (pss, rss int64) {
	t.Helper()
	for _, pid := range pids {
		m, err := statusAt(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		if err != nil {
			t.Fatalf("smaps_rollup of %d: %v", pid, err)
		}
		p, _ := strconv.ParseInt(strings.TrimSuffix(m["Pss"], " kB"), 10, 64)
		r, _ := strconv.ParseInt(strings.TrimSuffix(m["Rss"], " kB"), 10, 64)
		pss += p
		rss += r
	}
	return pss, rss
}
