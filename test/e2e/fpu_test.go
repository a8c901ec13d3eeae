package e2e

import (
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestFPURegisters: values that live only in SSE, AVX (and AVX-512 where the
// CPU has it) registers and in r12-r15 survive the dump of a task spinning
// in user space. The victim compares them every iteration and exits 1 by
// itself at the first difference (fpu.c).
func TestFPURegisters(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	mode := fpuMode(t)
	v := testutil.StartVictim(t, "fpu", mode)
	v.WaitReady(t)
	time.Sleep(200 * time.Millisecond)
	testutil.DumpRestore(t, v)

	// Let it spin: a lost register ends it with exit 1 at once.
	time.Sleep(300 * time.Millisecond)
	if !testutil.ProcessAlive(v.Pid) {
		t.Fatalf("restored fpu victim (mode %s) ended by itself: exit %d\n%s", mode, v.Wait(t, time.Second), v.LogTail())
	}
	v.TermAndCheck(t)
	t.Logf("mode %s checked", mode)
}
