package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"testing"

	"golang.org/x/sys/unix"
)

// CriuOutcome checkpoints the ready victim v with the CRIU 4.2 reference
// (dump, then restore -d, then SIGTERM) and says how it went, without
// failing the test: "PASS", or the step that failed with its first
// errors or the victim's FAIL lines. Tests log it beside stasis' result
// on the same victim. criu 4.2 needs --network-lock nftables here.
func CriuOutcome(t testing.TB, v *Victim, extra ...string) string {
	t.Helper()
	return CriuOutcomeWith(t, v, CriuRun{Dump: extra, Restore: extra})
}

// CriuRun is how CriuOutcomeWith runs criu: extra flags of the dump and of
// the restore, files given to the restore as fds 3, 4, ... (for
// --inherit-fd), and what to do once the victim is back, before SIGTERM.
type CriuRun struct {
	Dump, Restore []string
	Files         []*os.File
	BeforeTerm    func()
}

// CriuOutcomeWith is CriuOutcome as run says.
func CriuOutcomeWith(t testing.TB, v *Victim, run CriuRun) string {
	t.Helper()
	dir := t.TempDir()
	// The victim's children (zombies among them) come to the test
	// process when the dump kills it: they must be reaped to free their
	// pids for the restore.
	var members []int
	if ts, err := Tree(v.Pid); err == nil {
		members = Pids(ts[1:])
	}
	args := append([]string{"dump", "-t", strconv.Itoa(v.Pid), "-D", dir, "--network-lock", "nftables"}, run.Dump...)
	r := RunCRIU(t, 60*time.Second, dir, args...)
	took := r.Took
	if r.Code != 0 {
		left := "the victim was left running"
		select {
		case code := <-v.exited:
			v.done = true
			left = fmt.Sprintf("the victim did not survive it (exit %d)", code)
		case <-time.After(200 * time.Millisecond):
		}
		return fmt.Sprintf("dump refused (exit %d; %s): %s", r.Code, left, firstLines(CriuErrors(r.Log), 3))
	}
	select {
	case code := <-v.exited:
		v.done = true
		if code != 128+int(unix.SIGKILL) {
			return fmt.Sprintf("dump: the victim ended with %d, not SIGKILL", code)
		}
	case <-time.After(10 * time.Second):
		return "dump exited 0 but the victim still runs"
	}
	for _, pid := range members {
		if !reapOrWait(pid, 10*time.Second) {
			return fmt.Sprintf("dump: pid %d of the tree is still held", pid)
		}
	}
	pidfile := filepath.Join(t.TempDir(), "criu.pid")
	r = RunCRIUFiles(t, 30*time.Second, dir, run.Files, append([]string{"restore", "-D", dir, "-d", "--pidfile", pidfile, "--network-lock", "nftables"}, run.Restore...)...)
	if r.Code != 0 {
		return fmt.Sprintf("restore failed (exit %d): %s", r.Code, firstLines(CriuErrors(r.Log), 3))
	}
	v.restore, v.done, v.exited = nil, false, make(chan int, 1)
	go waitPid(v.Pid, v.exited)
	if run.BeforeTerm != nil {
		run.BeforeTerm()
	}
	if err := unix.Kill(v.Pid, unix.SIGTERM); err != nil {
		return fmt.Sprintf("restore exited 0 but pid %d is not there: %v", v.Pid, err)
	}
	select {
	case code := <-v.exited:
		v.done = true
		if code == 0 {
			return fmt.Sprintf("PASS (dump %v)", took.Round(time.Millisecond))
		}
		var fails []string
		for _, l := range strings.Split(tail(v.Log, 30), "\n") {
			if strings.HasPrefix(l, "FAIL") {
				fails = append(fails, l)
			}
		}
		return fmt.Sprintf("self-check failed (exit %d): %s", code, strings.Join(fails, "; "))
	case <-time.After(15 * time.Second):
		return "restored victim did not end after SIGTERM"
	}
}

func firstLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[:n]
	}
	return strings.Join(l, " | ")
}
