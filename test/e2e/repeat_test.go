package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// counterVictim starts a counter victim and returns it with its status file
// once it has counted to 20, so that a reset to 0 cannot pass for progress.
func counterVictim(t *testing.T) (*testutil.Victim, string) {
	t.Helper()
	status := filepath.Join(t.TempDir(), "count")
	v := testutil.StartVictim(t, "counter", status)
	v.WaitReady(t)
	testutil.WaitFor(t, 5*time.Second, "the counter to reach 20", func() bool {
		return testutil.ReadCounter(t, status) >= 20
	})
	return v, status
}

// resetCounterFile overwrites the status file with 0 (same size, so that the
// restore does not see a changed file), to tell fresh writes from stale ones.
// It returns when, just before the restore: the restored counter may count
// from then on.
func resetCounterFile(t *testing.T, status string) time.Time {
	t.Helper()
	if err := os.WriteFile(status, []byte("                   0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return time.Now()
}

// expectCountingFrom waits until the restored counter writes values above
// from (the status file was reset to 0 at since, then restored), and checks
// it resumed from there: no value in 1..from (a reset), no jump far ahead.
func expectCountingFrom(t *testing.T, status string, from uint64, since time.Time) {
	t.Helper()
	expectCountingBetween(t, status, from, from, since)
}

// expectCountingBetween is expectCountingFrom for a dump that saw the
// counter at some value in lo..hi (a dump -R, the counter running around
// it): a value at or below lo is a reset, one far above hi plus a step per
// 10 ms since is a jump.
func expectCountingBetween(t *testing.T, status string, lo, hi uint64, since time.Time) {
	t.Helper()
	var n uint64
	testutil.WaitFor(t, 5*time.Second, "the restored counter to advance", func() bool {
		n = testutil.ReadCounter(t, status)
		if n != 0 && n <= lo {
			t.Fatalf("the restored counter wrote %d, dumped at %d or later: it started over", n, lo)
		}
		return n > lo
	})
	// 10 ms per step: anything far above means it did not resume from the dump.
	if limit := hi + uint64(time.Since(since)/(10*time.Millisecond)) + 50; n > limit {
		t.Errorf("counter is %d after the restore, want it to resume from %d..%d (at most %d)", n, lo, hi, limit)
	}
	t.Logf("counter resumed: %d..%d -> %d", lo, hi, n)
}

// TestDumpRestoreTwice: dump -> restore -> dump -> restore of one process;
// the second generation is restored in the foreground, so stasis restore's
// exit code is the victim's.
func TestDumpRestoreTwice(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	v, status := counterVictim(t)
	for gen := 1; gen <= 2; gen++ {
		dir := t.TempDir()
		testutil.Dump(t, v.Pid, dir)
		v.Reap(t)
		at := testutil.ReadCounter(t, status)
		reset := resetCounterFile(t, status)
		if gen == 1 {
			testutil.RestoreDetached(t, dir, v)
		} else {
			testutil.Restore(t, dir, v)
		}
		expectCountingFrom(t, status, at, reset)
	}
	v.TermAndCheck(t)
}

// TestRestoreTwiceFromOneDump: the same images restore a second time after
// the first restored process has exited.
func TestRestoreTwiceFromOneDump(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	v, status := counterVictim(t)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	at := testutil.ReadCounter(t, status)
	for i := 1; i <= 2; i++ {
		reset := resetCounterFile(t, status)
		testutil.RestoreDetached(t, dir, v)
		expectCountingFrom(t, status, at, reset)
		v.TermAndCheck(t)
		testutil.AssertNoTask(t, v.Pid)
	}
}
