package e2e

import (
	"strconv"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestTimers: POSIX timers (SIGEV_SIGNAL, SIGEV_THREAD_ID to a worker
// thread, SIGEV_NONE; two deleted ones leave gaps in the IDs) and the three
// itimers keep firing after the restore at their intervals, which the
// victim measures over its last 8 expirations, all after the restore; their
// IDs, signal values and targets are unchanged, the deleted timers do not
// come back, and a timer whose signal stayed blocked still has it pending
// with its overrun count (timers.c). The victim runs 1.5 s before the dump
// and after the restore; the CPU-time itimers fire as the victim gets CPU
// time, which on a loaded machine is a fraction of the wall time: after the
// restore the test waits for 0.8 s of the victim's user time (the victim
// itself waits for its CPU-time timers before READY).
func TestTimers(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, "timers")
	v.WaitReady(t)
	testutil.DumpRestore(t, v)
	start := time.Now()
	base := userTime(t, v.Pid)
	testutil.WaitFor(t, 60*time.Second, "the restored victim to run 0.8 s of user CPU time", func() bool {
		return userTime(t, v.Pid)-base >= 800*time.Millisecond
	})
	if d := 1500*time.Millisecond - time.Since(start); d > 0 {
		time.Sleep(d)
	}
	t.Logf("after the restore: %v wall, %v of user CPU time", time.Since(start).Round(time.Millisecond), userTime(t, v.Pid)-base)
	if !testutil.ProcessAlive(v.Pid) {
		t.Fatalf("the restored timers victim ended by itself: exit %d\n%s", v.Wait(t, time.Second), v.LogTail())
	}
	v.TermAndCheck(t)
	t.Logf("victim's figures:\n%s", v.LogTail())
}

// userTime is the user CPU time of every thread of pid so far (utime,
// field 14 of /proc/PID/stat, in clock ticks of 10 ms).
func userTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	f, err := testutil.StatField(pid, 14)
	if err != nil {
		t.Fatalf("utime of pid %d: %v", pid, err)
	}
	ticks, err := strconv.ParseInt(f, 10, 64)
	if err != nil {
		t.Fatalf("utime of pid %d: %v", pid, err)
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}
