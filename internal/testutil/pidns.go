package testutil

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// NSCopy is one `stasis restore --pidns` run in the foreground: a copy of a
// dumped tree in a fresh pid namespace, where each task has its original
// pid while the host sees it under another one.
type NSCopy struct {
	HostPid int // the root's pid in the test's namespace (the pidfile)
	Log     string

	cmd     *exec.Cmd
	pidfile string
	stderr  bytes.Buffer
	exited  chan int
	done    bool
}

// StartRestorePidNS starts `stasis restore -D DIR --pidns --pidfile F -v4
// -o LOG EXTRA...` without waiting for it; WaitRestored waits for the copy.
func StartRestorePidNS(t testing.TB, dir string, extra ...string) *NSCopy {
	t.Helper()
	log := logFile(t, "restore-pidns")
	c := &NSCopy{Log: log, pidfile: log + ".pid", exited: make(chan int, 1)}
	args := append([]string{"restore", "-D", dir, "--pidns", "--pidfile", c.pidfile, "-v4", "-o", log}, extra...)
	c.cmd = exec.Command(StasisBin(t), args...)
	c.cmd.Stderr = &c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.cmd.Wait()
		c.exited <- exitCode(c.cmd.ProcessState.Sys().(syscall.WaitStatus))
	}()
	t.Cleanup(func() {
		if !c.done {
			c.cmd.Process.Kill()
			select {
			case <-c.exited:
			case <-time.After(5 * time.Second):
			}
			c.done = true
		}
	})
	return c
}

// WaitRestored waits until the copy's root runs: the pidfile names a host
// pid whose innermost pid (NSpid) is origPid, in another pid namespace than
// the test's, not traced, not a zombie. It then tracks every task under the
// stasis process for the test's cleanup.
func (c *NSCopy) WaitRestored(t testing.TB, origPid int) {
	t.Helper()
	start := time.Now()
	for {
		if c.restored(origPid) {
			break
		}
		select {
		case code := <-c.exited:
			c.done = true
			t.Fatalf("stasis restore --pidns exited with %d before the copy of pid %d was back\n--- stderr ---\n%s\n--- %s (tail) ---\n%s",
				code, origPid, strings.TrimSpace(c.stderr.String()), c.Log, tail(c.Log, 40))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Since(start) > 60*time.Second {
			b, _ := os.ReadFile(c.pidfile)
			t.Fatalf("restore --pidns of pid %d: copy not back after 60s (pidfile %q)\n--- %s (tail) ---\n%s", origPid, b, c.Log, tail(c.Log, 40))
		}
	}
	if ns, my := pidNS(c.HostPid), pidNS(os.Getpid()); ns == "" || ns == my {
		t.Errorf("copy of pid %d (host pid %d) is in pid namespace %q, want a new one (the test's is %q)", origPid, c.HostPid, ns, my)
	}
	if ts, err := Tree(c.cmd.Process.Pid); err == nil {
		Track(t, Pids(ts[1:]), c.cmd.Process.Pid)
	}
	t.Logf("restored a copy of pid %d in a new pid namespace as host pid %d in %v", origPid, c.HostPid, time.Since(start).Round(time.Millisecond))
}

func (c *NSCopy) restored(origPid int) bool {
	b, err := os.ReadFile(c.pidfile)
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return false
	}
	st, err := Status(pid)
	if err != nil || st["TracerPid"] != "0" || strings.HasPrefix(st["State"], "Z") {
		return false
	}
	ns := strings.Fields(st["NSpid"])
	if len(ns) < 2 || ns[len(ns)-1] != strconv.Itoa(origPid) {
		return false
	}
	c.HostPid = pid
	return true
}

// pidNS is the /proc/PID/ns/pid link, "" if unreadable.
func pidNS(pid int) string {
	l, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/pid")
	return l
}

// Wait waits for stasis restore to end and returns its exit code, which is
// the copy's root's; it fails the test after timeout (at least MinWait).
func (c *NSCopy) Wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	timeout = max(timeout, MinWait)
	select {
	case code := <-c.exited:
		c.done = true
		return code
	case <-time.After(timeout):
		t.Fatalf("stasis restore --pidns (copy host pid %d) still running after %v\n--- %s (tail) ---\n%s", c.HostPid, timeout, c.Log, tail(c.Log, 20))
	}
	return 0
}

// Stderr is what stasis restore printed on stderr.
func (c *NSCopy) Stderr() string { return c.stderr.String() }
