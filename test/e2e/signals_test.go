package e2e

import (
	"os"
	"strconv"
	"testing"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// rtsig is SIGRTMIN+3 as glibc numbers it (SIGRTMIN is 34: glibc keeps 32
// and 33 for itself).
const rtsig = 34 + 3

// TestSignals: dispositions (SIGUSR1 handler with SA_RESTART and an
// sa_mask, SIGPIPE ignored), the blocked mask, a blocked SIGUSR2 pending at
// dump time and two queued SIGRTMIN+3 with their si_value all survive; the
// SIGUSR1 handler runs for a signal sent after the restore (signals.c).
func TestSignals(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, "signals", strconv.Itoa(os.Getpid()))
	v.WaitReady(t)
	sendPendingUSR2(t, v)
	testutil.DumpRestore(t, v)

	st, err := testutil.Status(v.Pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, sig := range []int{12, rtsig} {
		if !pendingBit(st["ShdPnd"], sig) {
			t.Errorf("signal %d is not pending after restore: ShdPnd %s, SigPnd %s", sig, st["ShdPnd"], st["SigPnd"])
		}
	}
	sendUSR1(t, v)
	v.TermAndCheck(t)
}
