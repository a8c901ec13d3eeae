package testutil

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
)

// Victim is one logical process across its incarnations: the original, then
// each restored copy (same PID). Its stdout and stderr are one log file
// opened O_WRONLY|O_APPEND (never a pipe, which the dumper may not support;
// O_APPEND because the restored copies write to it too, and criu does not
// check the size of such a file on restore). Stdin is /dev/null. It runs in
// its own session (Setsid), so that it is a self-contained tree.
type Victim struct {
	Pid   int
	Comm  string // the original's comm, also expected after a restore
	Log   string
	Ready string // ready file ("" for programs that do not write one)

	t       testing.TB
	exited  chan int  // exit code of the current incarnation
	done    bool      // the current incarnation's exit was received
	restore *exec.Cmd // the foreground `stasis restore` of the current incarnation
	rstderr *bytes.Buffer
}

// StartVictim builds and starts test/victims/NAME.c as `NAME READY ARGS...`
// with READY a fresh path in a temp dir. Call WaitReady next.
func StartVictim(t testing.TB, name string, args ...string) *Victim {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	v := start(t, BuildVictim(t, name), append([]string{ready}, args...), ready, nil)
	return v
}

// StartVictimWith is StartVictim with setup applied to the command just
// before it starts: to give it another stdin, or no session of its own
// (setup replaces SysProcAttr).
func StartVictimWith(t testing.TB, setup func(*exec.Cmd), name string, args ...string) *Victim {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	return start(t, BuildVictim(t, name), append([]string{ready}, args...), ready, setup)
}

// StartProgram starts any program under the victim protocol's conditions
// (own session, /dev/null stdin, log file output) but without a ready file.
func StartProgram(t testing.TB, path string, args ...string) *Victim {
	t.Helper()
	return start(t, path, args, "", nil)
}

func start(t testing.TB, path string, args []string, ready string, setup func(*exec.Cmd)) *Victim {
	t.Helper()
	log := filepath.Join(t.TempDir(), filepath.Base(path)+".log")
	f, err := os.OpenFile(log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if setup != nil {
		setup(cmd)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	v := &Victim{Pid: cmd.Process.Pid, Comm: execComm(cmd.Process.Pid), Log: log, Ready: ready, t: t, exited: make(chan int, 1)}
	go func() {
		cmd.Wait()
		v.exited <- exitCode(cmd.ProcessState.Sys().(syscall.WaitStatus))
	}()
	t.Cleanup(v.cleanup)
	t.Logf("started %s as pid %d", strings.Join(append([]string{filepath.Base(path)}, args...), " "), v.Pid)
	return v
}

// exitCode folds a wait status the way shells and `stasis restore` do:
// the exit status, or 128+signal.
func exitCode(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// notChild is reported for a restored task that ended while not being a
// child of the test process: its exit status could not be collected.
const notChild = -1

// WaitReady waits until the victim has created its ready file.
func (v *Victim) WaitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(v.Ready); err == nil {
			return
		}
		select {
		case code := <-v.exited:
			v.done = true
			t.Fatalf("victim pid %d exited with %d before it was ready\n%s", v.Pid, code, v.LogTail())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("victim pid %d not ready after 60s\n%s", v.Pid, v.LogTail())
		}
	}
}

// LogTail is the end of the victim's log, for failure messages.
func (v *Victim) LogTail() string {
	return "--- victim log (tail) ---\n" + tail(v.Log, 30)
}

// Wait waits for the current incarnation to end and returns its exit code
// (128+signal if killed by one); it fails the test after timeout (at
// least MinWait).
func (v *Victim) Wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	timeout = max(timeout, MinWait)
	if v.done {
		t.Fatalf("pid %d: incarnation already ended", v.Pid)
	}
	select {
	case code := <-v.exited:
		v.done = true
		if code == notChild {
			t.Fatalf("pid %d ended, but not as a child of the test process (a restored task must be a child of `stasis restore`, or re-parented to the subreaper with -d): exit status unknown\n%s", v.Pid, v.LogTail())
		}
		return code
	case <-time.After(timeout):
		st, _ := Status(v.Pid)
		t.Fatalf("pid %d still running after %v (state %q)\n%s", v.Pid, timeout, st["State"], v.LogTail())
	}
	return 0
}

// Reap collects the incarnation that a dump just killed, which frees its
// PID for the restore, and checks that SIGKILL is what ended it.
func (v *Victim) Reap(t testing.TB) {
	t.Helper()
	if code := v.Wait(t, 30*time.Second); code != 128+int(unix.SIGKILL) {
		t.Fatalf("pid %d: after the dump it ended with %d, want %d (SIGKILL)\n%s", v.Pid, code, 128+int(unix.SIGKILL), v.LogTail())
	}
	if v.restore != nil && v.rstderr.Len() > 0 {
		t.Logf("stasis restore (foreground) stderr: %s", strings.TrimSpace(v.rstderr.String()))
	}
	AssertNoTask(t, v.Pid)
}

// Signal sends sig to the victim's PID.
func (v *Victim) Signal(t testing.TB, sig unix.Signal) {
	t.Helper()
	if err := unix.Kill(v.Pid, sig); err != nil {
		t.Fatalf("kill(%d, %v): %v", v.Pid, sig, err)
	}
}

// TermAndCheck sends SIGTERM and requires exit 0: the victim verified its
// whole state. On failure it quotes the victim's "FAIL:" lines.
func (v *Victim) TermAndCheck(t testing.TB) {
	t.Helper()
	v.TermAndCheckWithin(t, 30*time.Second)
}

// TermAndCheckWithin is TermAndCheck for a victim whose self-check takes
// long (gigabytes to read back on a loaded machine): it waits up to
// limit.
func (v *Victim) TermAndCheckWithin(t testing.TB, limit time.Duration) {
	t.Helper()
	v.Signal(t, unix.SIGTERM)
	if code := v.Wait(t, limit); code != 0 {
		t.Fatalf("pid %d: self-check after SIGTERM exited with %d, want 0\n%s", v.Pid, code, v.LogTail())
	}
}

// cleanup kills the current incarnation if it may still run (by PID only)
// and any foreground restore, then waits for them.
func (v *Victim) cleanup() {
	if !v.done {
		select {
		case <-v.exited:
			v.done = true
		default:
			unix.Kill(v.Pid, unix.SIGKILL)
		}
	}
	if v.restore != nil {
		v.restore.Process.Kill() // a no-op once it has exited
	}
	if !v.done {
		select {
		case <-v.exited:
		case <-time.After(5 * time.Second):
		}
		v.done = true
	}
}

// Restore runs `stasis restore -D DIR --pidfile F -v4 -o LOG EXTRA...` in the
// foreground: it waits until the task is back (pidfile written, same PID,
// same comm, no tracer) and makes it the victim's current incarnation, whose
// exit code is then stasis restore's own.
func Restore(t testing.TB, dir string, v *Victim, extra ...string) {
	t.Helper()
	v.expectEnded(t)
	before := Children(os.Getpid())
	log := logFile(t, "restore")
	pidfile := log + ".pid"
	args := append([]string{"restore", "-D", dir, "--pidfile", pidfile, "-v4", "-o", log}, extra...)
	cmd := exec.Command(StasisBin(t), args...)
	var stdout bytes.Buffer
	v.rstderr = &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = &stdout, v.rstderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	v.restore, v.done, v.exited = cmd, false, make(chan int, 1)
	exited := v.exited
	go func() {
		cmd.Wait()
		exited <- exitCode(cmd.ProcessState.Sys().(syscall.WaitStatus))
	}()
	deadline := start.Add(60 * time.Second)
	for !v.restored(pidfile) {
		select {
		case code := <-exited:
			v.done = true
			r := Result{Args: args, Code: code, Stdout: stdout.String(), Stderr: v.rstderr.String(), Took: time.Since(start), Log: log}
			checkNoNewChildren(t, before, dir)
			t.Fatalf("restore of pid %d ended before the task was back\n%s\n%s", v.Pid, r, v.LogTail())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("restore of pid %d: task not back after 60s (pidfile, comm %q, no tracer)\n--- log tail ---\n%s", v.Pid, v.Comm, tail(log, 40))
		}
	}
	if ppid := mustStat(t, v.Pid).PPid; ppid != cmd.Process.Pid {
		t.Errorf("restored pid %d has parent %d, want stasis restore (pid %d)", v.Pid, ppid, cmd.Process.Pid)
	}
	t.Logf("restored pid %d (foreground) in %v", v.Pid, time.Since(start).Round(time.Millisecond))
}

// RestoreDetached runs `stasis restore -D DIR -d --pidfile F ...`, which must
// exit 0 with the task running under the same PID; the task is then a child
// of the test process (subreaper), whose exit status Wait collects.
func RestoreDetached(t testing.TB, dir string, v *Victim, extra ...string) {
	t.Helper()
	RestoreDetachedUnder(t, nil, dir, v, extra...)
}

// RestoreDetachedUnder is RestoreDetached with stasis started through the
// command prefix, which must exec it (prlimit --nofile=N:N, to restore
// under a lower fd limit).
func RestoreDetachedUnder(t testing.TB, prefix []string, dir string, v *Victim, extra ...string) {
	t.Helper()
	v.expectEnded(t)
	before := Children(os.Getpid())
	log := logFile(t, "restore")
	pidfile := log + ".pid"
	args := append([]string{"restore", "-D", dir, "-d", "--pidfile", pidfile, "-v4", "-o", log}, extra...)
	r := runUnder(t, 90*time.Second, prefix, args...)
	r.Log = log
	if r.Code != 0 {
		checkNoNewChildren(t, before, dir)
		t.Fatalf("restore -d of pid %d failed\n%s\n%s", v.Pid, r, v.LogTail())
	}
	v.restore, v.done, v.exited = nil, false, make(chan int, 1)
	go waitPid(v.Pid, v.exited)
	if !v.restoredWithin(pidfile, 10*time.Second) { // let a slow detach finish, then judge
		st, _ := Status(v.Pid)
		b, _ := os.ReadFile(pidfile)
		t.Fatalf("restore -d exited 0 but pid %d is not back: pidfile %q, comm %q (want %q), state %q, TracerPid %q\n%s",
			v.Pid, b, Comm(v.Pid), v.Comm, st["State"], st["TracerPid"], r)
	}
	if ppid := mustStat(t, v.Pid).PPid; ppid != os.Getpid() {
		t.Errorf("restored pid %d has parent %d, want the test process %d (subreaper)", v.Pid, ppid, os.Getpid())
	}
	t.Logf("restored pid %d (-d) in %v", v.Pid, r.Took.Round(time.Millisecond))
}

// restored reports whether the restore is complete: the pidfile names the
// PID, and the task runs there with its comm and no tracer.
func (v *Victim) restored(pidfile string) bool {
	b, err := os.ReadFile(pidfile)
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(v.Pid) {
		return false
	}
	st, err := Status(v.Pid)
	return err == nil && st["TracerPid"] == "0" && st["Name"] == v.Comm && !strings.HasPrefix(st["State"], "Z")
}

// restoredWithin polls restored for up to timeout.
func (v *Victim) restoredWithin(pidfile string, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); !v.restored(pidfile); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

func (v *Victim) expectEnded(t testing.TB) {
	t.Helper()
	if !v.done {
		t.Fatalf("pid %d: restore while the previous incarnation was not reaped (call Reap or Wait first)", v.Pid)
	}
}

func mustStat(t testing.TB, pid int) Stat {
	t.Helper()
	st, err := ReadStat(pid)
	if err != nil {
		t.Fatalf("pid %d: %v", pid, err)
	}
	return st
}

// waitPid collects the exit status of a task re-parented to the test
// process. While the task is not (yet) our child wait4 says ECHILD: poll.
func waitPid(pid int, exited chan<- int) {
	for {
		var ws unix.WaitStatus
		_, err := linux.Wait4(pid, &ws, unix.WALL)
		switch {
		case err == nil:
			exited <- exitCode(syscall.WaitStatus(ws))
			return
		case !Exists(pid):
			exited <- notChild
			return
		default:
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// killAndReap kills PID and reaps it if it is our child.
func killAndReap(pid int) {
	unix.Kill(pid, unix.SIGKILL)
	for i := 0; i < 100 && Exists(pid); i++ {
		var ws unix.WaitStatus
		linux.Wait4(pid, &ws, unix.WALL|unix.WNOHANG)
		time.Sleep(10 * time.Millisecond)
	}
}

// DumpRestore is the round trip most tests make: dump v into a fresh
// images dir (which kills it), reap it, decode every image with both
// decoders, restore with -d. It returns the images dir.
func DumpRestore(t testing.TB, v *Victim, dumpArgs ...string) string {
	t.Helper()
	dir := t.TempDir()
	Dump(t, v.Pid, dir, dumpArgs...)
	v.Reap(t)
	CheckImages(t, dir)
	RestoreDetached(t, dir, v)
	return dir
}

// execComm is the comm of a child just started: Start returns once the
// exec has closed the child's close-on-exec fds, which the kernel does
// before it renames the task, so for a moment the child still has the
// test's own comm.
func execComm(pid int) string {
	own := Comm(os.Getpid())
	c := Comm(pid)
	for deadline := time.Now().Add(10 * time.Second); c == own && time.Now().Before(deadline); c = Comm(pid) {
		time.Sleep(time.Millisecond)
	}
	return c
}
