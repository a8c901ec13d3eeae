package e2e

import (
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestPidAndClocks: getpid() is the same after the restore, and
// clock_gettime (MONOTONIC, BOOTTIME, REALTIME) and gettimeofday through the
// vDSO agree with the syscalls and move forward; MONOTONIC never went back
// across the restore (clock.c). The task stays dumped for a second.
func TestPidAndClocks(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, "clock")
	v.WaitReady(t)
	time.Sleep(100 * time.Millisecond)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	time.Sleep(time.Second)
	testutil.RestoreDetached(t, dir, v)
	time.Sleep(200 * time.Millisecond)
	v.TermAndCheck(t)
}
