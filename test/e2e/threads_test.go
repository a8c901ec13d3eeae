package e2e

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestThreads: a process with 100 threads, some blocked in FUTEX_WAIT, some
// in nanosleep, some spinning with values in registers, some in timed futex
// waits, is restored with every thread: same TIDs, names, blocked masks and
// thread-pending signals (compared in /proc before and after), and each
// thread checks from the inside its TID, mask, name, __thread variables,
// sigaltstack (a signal runs on it), robust list, clear_child_tid (joining
// it works), rseq registration, registers, and that its interrupted futex
// wait was restarted; the main thread checks the thread count, progress of
// every thread, a robust mutex a dead thread held, and the process-wide
// pending signal (threads.c).
func TestThreads(t *testing.T) {
	testutil.RequireRoot(t)
	testThreads(t, 100)
}

// TestThreads1000: the same with 1,000 threads, dump + restore within
// 30 s: a sanity check against per-thread costs of stasis that do not
// scale. Only stasis' own time counts: the victim's start and self-check
// (1,000 threads made and joined) took most of 30 s on a loaded machine.
func TestThreads1000(t *testing.T) {
	testutil.RequireRoot(t)
	dump, restore := testThreads(t, 1000)
	if took := dump + restore; took > 30*time.Second {
		t.Errorf("1000 threads: dump %v + restore %v, want < 30 s", dump.Round(time.Millisecond), restore.Round(time.Millisecond))
	}
}

// testThreads returns how long the dump and the restore took.
func testThreads(t *testing.T, n int) (dump, restore time.Duration) {
	t.Helper()
	v := testutil.StartVictim(t, "threads", strconv.Itoa(n))
	v.WaitReady(t)
	before, err := testutil.Threads(v.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if len(before) != n+1 {
		t.Fatalf("the victim has %d threads, want %d", len(before), n+1)
	}
	dir := t.TempDir()
	r := testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	if pst := testutil.ImageTree(t, dir); len(pst) != 1 || len(pst[0].GetThreads()) != n+1 {
		t.Errorf("pstree.img: %d process(es), want 1 with %d threads: %v", len(pst), n+1, pst)
	}
	checkImageSample(t, dir, v.Pid)

	start := time.Now()
	testutil.RestoreDetached(t, dir, v)
	restored := time.Since(start)
	var diff []string
	ok := false
	for deadline := time.Now().Add(testutil.MinWait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		after, err := testutil.Threads(v.Pid)
		if err != nil {
			t.Fatal(err)
		}
		if diff = testutil.DiffThreads(before, after); len(diff) == 0 {
			ok = true
			break
		}
	}
	if !ok {
		if len(diff) > 20 {
			diff = append(diff[:20], "...")
		}
		t.Errorf("threads after the restore differ from the dumped ones:\n  %s", strings.Join(diff, "\n  "))
	}
	t.Logf("%d threads: dump %v, restore %v", n, r.Took.Round(time.Millisecond), restored.Round(time.Millisecond))
	time.Sleep(300 * time.Millisecond)
	v.TermAndCheck(t)
	return r.Took, restored
}
