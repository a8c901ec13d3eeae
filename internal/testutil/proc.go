package testutil

import (
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"

	imgdir "github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/proc"

	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BecomeSubreaper makes the test process the child subreaper, so that a task
// restored with `restore -d` is re-parented to it and can be waited for.
func BecomeSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// Stat holds the fields of /proc/PID/stat that the tests look at.
type Stat struct {
	Comm  string
	State byte // R, S, D, T, t, Z, ...
	PPid  int
}

// ReadStat parses /proc/PID/stat; comm may hold spaces and parentheses, so
// the fields after it are found from the last ')'.
func ReadStat(pid int) (Stat, error) {
	st, err := proc.ReadStat(pid)
	if err != nil {
		return Stat{}, err
	}
	return Stat{Comm: st.Comm, State: st.State, PPid: st.PPid}, nil
}

// StatField is field n (1-based, as in proc(5)) of /proc/PID/stat.
func StatField(pid, n int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	s := string(b)
	close := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[close+1:]) // field 3 onwards
	if n < 3 || n-3 >= len(f) {
		return "", fmt.Errorf("/proc/%d/stat has no field %d", pid, n)
	}
	return f[n-3], nil
}

// Status is /proc/PID/status as a map ("State" -> "S (sleeping)").
func Status(pid int) (map[string]string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m, sc.Err()
}

// ProcessAlive reports whether PID is a live (not zombie) task.
func ProcessAlive(pid int) bool {
	st, err := ReadStat(pid)
	return err == nil && st.State != 'Z' && st.State != 'X'
}

// Exists reports whether any task, zombie included, holds PID.
func Exists(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err == nil
}

// Comm is /proc/PID/comm without the newline, or "" if the task is gone.
func Comm(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// CurrentSyscall is the number of the syscall PID is blocked in, from
// /proc/PID/syscall, or -1 when it runs in user space.
func CurrentSyscall(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 || f[0] == "running" {
		return -1, nil
	}
	return strconv.Atoi(f[0])
}

// MinWait is the shortest deadline WaitFor and WaitTreeDiff give a
// condition: CI runs four tests at a time on two cores, some restoring
// hundreds of MiB or starting database servers, where a task may get no
// CPU for seconds. A deadline only bounds how long a failing test takes;
// a condition that holds passes at once.
const MinWait = 30 * time.Second

// WaitFor polls cond every 10 ms until it holds; after timeout (at least
// MinWait) it fails the test with "timed out after D waiting for WHAT".
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	asked := timeout
	timeout = max(timeout, MinWait)
	start := time.Now()
	deadline := start.Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A wait past what its caller asked for passes, but says so: the
	// verbose logs of loaded runs show which waits come near MinWait.
	if took := time.Since(start); took > asked {
		t.Logf("slow: waited %v for %s (asked %v, limit %v)", took.Round(time.Millisecond), what, asked, timeout)
	}
}

// AssertNoTask fails the test if a task (zombies included) holds PID, after
// a 10 s grace period for the kernel to finish tearing it down (long: the
// machine may be loaded).
func AssertNoTask(t testing.TB, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for Exists(pid) {
		if time.Now().After(deadline) {
			st, _ := ReadStat(pid)
			t.Errorf("pid %d is still held by a task (comm %q, state %c, ppid %d)", pid, st.Comm, st.State, st.PPid)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// AssertRunning fails the test unless PID is alive, not stopped and not
// traced: the state a failed dump must leave its target in.
func AssertRunning(t testing.TB, pid int) {
	t.Helper()
	var last string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		st, err := Status(pid)
		if err != nil {
			t.Fatalf("pid %d is gone: %v", pid, err)
		}
		state := st["State"]
		last = fmt.Sprintf("state %q, TracerPid %s", state, st["TracerPid"])
		if st["TracerPid"] == "0" && state != "" && !strings.ContainsAny(state[:1], "ZXTt") {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pid %d is not running untouched: %s", pid, last)
}

// Children lists the tasks whose parent is PID (zombies included).
func Children(pid int) []int {
	var kids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := ReadStat(n); err == nil && st.PPid == pid {
			kids = append(kids, n)
		}
	}
	return kids
}

// checkNoNewChildren fails the test if a restore of the images in dir left
// a task behind: a new child of the test process (the subreaper inherits
// every orphan) that the restore could have made, one whose pid (or
// innermost pid, for --pidns) is a pid, pgid or sid of dir's pstree.img,
// or the restore's puppet. It kills and reaps those, so that they hold no
// PID. New children of other sorts are left alone: they are the victims
// and restored tasks of the tests that run in parallel.
func checkNoNewChildren(t testing.TB, before []int, dir string) {
	t.Helper()
	pids := imagePidSet(dir)
	var stray []int
	deadline := time.Now().Add(time.Second)
	for {
		stray = stray[:0]
		for _, k := range Children(os.Getpid()) {
			if !slices.Contains(before, k) && restoreMade(k, pids) {
				stray = append(stray, k)
			}
		}
		if len(stray) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, k := range stray {
		st, _ := ReadStat(k)
		t.Errorf("task left behind: pid %d (comm %q, state %c)", k, st.Comm, st.State)
		unix.Kill(k, unix.SIGKILL)
		var ws unix.WaitStatus
		unix.Wait4(k, &ws, unix.WALL, nil)
	}
}

// puppetArg is puppet.PuppetArg, the argument of the restore's puppet
// process (testutil does not import the restore package).
const puppetArg = "__stasis_puppet"

// restoreMade reports whether pid may be a task of a restore of images
// with the given pids.
func restoreMade(pid int, pids map[int]bool) bool {
	if pids[pid] {
		return true
	}
	if st, err := Status(pid); err == nil {
		if ns := strings.Fields(st["NSpid"]); len(ns) > 1 {
			if n, err := strconv.Atoi(ns[len(ns)-1]); err == nil && pids[n] {
				return true
			}
		}
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.Contains(string(b), puppetArg)
}

// imagePidSet is every pid, pgid and sid of dir's pstree.img, as far as
// it decodes (a damaged image: its entries before the damage, which are
// all a restore could have used).
func imagePidSet(dir string) map[int]bool {
	set := map[int]bool{}
	d, err := imgdir.Open(dir)
	if err != nil {
		return set
	}
	r, err := d.NewReader("pstree.img")
	if err != nil {
		return set
	}
	defer r.Close()
	for {
		var e pstree.PstreeEntry
		if r.Next(&e) != nil {
			return set
		}
		for _, p := range append([]uint32{e.GetPid(), e.GetPgid(), e.GetSid()}, e.GetThreads()...) {
			if p != 0 {
				set[int(p)] = true
			}
		}
	}
}

// FreePID returns a PID that no task holds, now or while the test runs:
// pid_max, one above the kernel's range. A free pid within the range may
// be given to a fork of a parallel test at any moment (a small pid_max,
// 32768 in many containers, wraps several times in a run), and a dump of
// it would then take that test's task.
func FreePID(t testing.TB) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	max, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("/proc/sys/kernel/pid_max: %v", err)
	}
	if Exists(max) {
		t.Fatalf("pid %d (pid_max) exists", max)
	}
	return max
}

// MapsLine is one line of /proc/PID/maps without the device column, which
// is the same file anyway when the inode and path match.
type MapsLine struct {
	Range, Perms, Offset, Inode, Path string
}

func (m MapsLine) String() string {
	return fmt.Sprintf("%s %s %s %s %s", m.Range, m.Perms, m.Offset, m.Inode, m.Path)
}

// Maps parses /proc/PID/maps.
func Maps(pid int) ([]MapsLine, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, err
	}
	var out []MapsLine
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 {
			return nil, fmt.Errorf("/proc/%d/maps: malformed line %q", pid, l)
		}
		m := MapsLine{Range: f[0], Perms: f[1], Offset: f[2], Inode: f[4]}
		if len(f) > 5 {
			m.Path = strings.Join(f[5:], " ")
		}
		out = append(out, m)
	}
	return out, nil
}

// ReadCounter reads the fixed-width counter a counter victim (or the python
// counter) keeps at the start of its status file. A read racing with the
// writer's pwrite is retried.
func ReadCounter(t testing.TB, path string) uint64 {
	t.Helper()
	var last string
	for i := 0; i < 10; i++ {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("read counter: %v", err)
		}
		last = string(b)
		if n, err := strconv.ParseUint(strings.TrimSpace(last), 10, 64); err == nil {
			return n
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("counter file %s holds %q", path, last)
	return 0
}

// tail returns the last n lines of a file, for failure messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "(" + filepath.Base(path) + " was not written)"
		}
		return err.Error()
	}
	return lastLines(string(b), n)
}

// lastLines returns the last n lines of s, saying how many it left out.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines before)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// CloseInheritedFDs marks every fd above 2 of the test process close-on-exec,
// so that victims get exactly stdin, stdout and stderr: an fd the test binary
// inherited from its caller (a CI runner's pipe, say) would otherwise end up
// in every victim, and the dump would have to deal with it.
func CloseInheritedFDs() error {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= 2 {
			continue
		}
		// The fd ReadDir itself used is closed by now: EBADF is fine.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil && err != unix.EBADF {
			return fmt.Errorf("fd %d: %w", fd, err)
		}
	}
	return nil
}

// AssertNoNewChildren fails the test if the test process has children that
// are not in before (taken with Children(os.Getpid())) and that a restore
// of dir could have made: a task an interrupted or failed restore left
// behind. It kills and reaps them.
func AssertNoNewChildren(t testing.TB, before []int, dir string) {
	t.Helper()
	checkNoNewChildren(t, before, dir)
}
