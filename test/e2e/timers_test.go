package e2e

import (
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
// and 1.5 s after the restore.
func TestTimers(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, "timers")
	v.WaitReady(t)
	testutil.DumpRestore(t, v)
	time.Sleep(1500 * time.Millisecond)
	if !testutil.ProcessAlive(v.Pid) {
		t.Fatalf("the restored timers victim ended by itself: exit %d\n%s", v.Wait(t, time.Second), v.LogTail())
	}
	v.TermAndCheck(t)
	t.Logf("victim's figures:\n%s", v.LogTail())
}
