package e2e

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// memtailCases are the scenarios of memtail.c (issue 15, the long tail of
// memory and task state). before runs between ready and the dump.
var memtailCases = []struct {
	scenario string
	before   func(t *testing.T, v *testutil.Victim)
	// pending says why stasis does not pass the scenario yet: criu's
	// result is logged, stasis' is not checked.
	pending string
	// maxDump bounds the dump's time (generous: the machine is shared).
	maxDump time.Duration
	// refused: the dump must fail with this in its error and leave the
	// victim running as it was.
	refused string
	// batchRestore: the restore runs under SCHED_BATCH at nice 5, which
	// its tasks inherit: each thread must get its own policy back, the
	// default one too.
	batchRestore bool
}{
	{scenario: "novdso"},
	{scenario: "droppable"},
	{scenario: "guard"},
	{scenario: "memfdpriv"},
	{scenario: "memfdpriv-closed"},
	{scenario: "memfdpriv-only"},
	{scenario: "execmemfd"},
	{scenario: "execmemfd-ro"},
	{scenario: "sched", batchRestore: true},
	{scenario: "loginuid"},
	// A dump that leaves the task running (-R) must leave its pending,
	// blocked SIGTRAP as it was: stasis' own single steps trap too.
	// So must a dump that fails once it has injected calls (interrupted
	// at its pages phase by the test hook).
	{scenario: "sigtrap", before: func(t *testing.T, v *testutil.Victim) {
		trapped := func(after string) {
			st, err := testutil.Status(v.Pid)
			if err != nil || !pendingBit(st["ShdPnd"], int(unix.SIGTRAP)) || !pendingBit(st["SigBlk"], int(unix.SIGTRAP)) {
				t.Errorf("after %s: SIGTRAP not pending and blocked any more: ShdPnd %s SigBlk %s (%v)", after, st["ShdPnd"], st["SigBlk"], err)
			}
		}
		testutil.Dump(t, v.Pid, t.TempDir(), "-R")
		trapped("dump -R")
		cmd := exec.Command(testutil.StasisBin(t), "dump", "-t", strconv.Itoa(v.Pid), "-D", t.TempDir())
		cmd.Env = append(os.Environ(), hookEnv+"=dump-pages")
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Fatalf("dump interrupted at dump-pages exited 0\n%s", out)
		}
		testutil.AssertRunning(t, v.Pid)
		trapped("an interrupted dump")
	}},
	// A 1 TiB PROT_NONE reservation with 4 pages in it (issue 18:
	// mariadbd reserves 8 TiB): the dump must not read its whole page map.
	{scenario: "sparse", maxDump: 5 * time.Second}, // 85 ms alone; 90 s read whole
	{scenario: "zombie-ign"},
	{scenario: "zombie-thread"},
	{scenario: "zombie-thread-gone"},
	{scenario: "zombie-thread-leader", refused: "a zombie leader with live threads is not supported"},
}

// TestMemTail dumps, kills and restores each memtail scenario with stasis
// (the victim checks itself), after running criu 4.2 on a fresh copy of
// the same victim and logging its result for comparison.
func TestMemTail(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	for _, c := range memtailCases {
		t.Run(c.scenario, func(t *testing.T) {
			t.Parallel() // its own victims and pids
			// criu 4.2 first, so that its result is logged whatever
			// stasis does.
			w := testutil.StartVictim(t, "memtail", c.scenario)
			w.WaitReady(t)
			t.Logf("criu 4.2 on memtail %s: %s", c.scenario, testutil.CriuOutcome(t, w))
			if c.pending != "" {
				t.Skip("stasis: " + c.pending)
			}

			v := testutil.StartVictim(t, "memtail", c.scenario)
			v.WaitReady(t)
			if c.before != nil {
				c.before(t, v)
			}
			dir := t.TempDir()
			if c.refused != "" {
				testutil.AssertContains(t, testutil.DumpFail(t, v.Pid, dir), c.refused)
				testutil.AssertRunning(t, v.Pid)
				v.TermAndCheck(t)
				t.Logf("stasis on memtail %s: refused, as it must be", c.scenario)
				return
			}
			tree := testutil.MustTree(t, v.Pid)
			r := testutil.Dump(t, v.Pid, dir)
			if c.maxDump != 0 && r.Took > c.maxDump {
				t.Errorf("stasis dump took %v, want under %v", r.Took.Round(time.Millisecond), c.maxDump)
			}
			v.Reap(t)
			testutil.ReapTasks(t, testutil.Pids(tree[1:]))
			testutil.CheckImages(t, dir)
			if c.batchRestore {
				runAsBatch(t)
			}
			testutil.RestoreDetached(t, dir, v)
			v.TermAndCheck(t)
			t.Logf("stasis on memtail %s: PASS", c.scenario)
		})
	}
}

// runAsBatch puts the test's goroutine on a thread of its own running
// SCHED_BATCH at nice 5, which the programs it starts inherit. The thread
// is never given back: it ends with the goroutine, its policy with it.
func runAsBatch(t *testing.T) {
	t.Helper()
	runtime.LockOSThread()
	tid := unix.Gettid()
	if err := unix.Setpriority(unix.PRIO_PROCESS, tid, 5); err != nil {
		t.Fatalf("setpriority: %v", err)
	}
	if err := unix.SchedSetAttr(tid, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: 3 /* SCHED_BATCH */}, 0); err != nil {
		t.Fatalf("sched_setattr: %v", err)
	}
}

// TestMemTailFromCRIU restores with stasis what criu 4.2 dumped of the
// memtail scenarios whose images carry what the victim checks (criu 4.2
// loses the pages of a MAP_DROPPABLE mapping and refuses a pending
// SIGTRAP): guard regions as VMA_AREA_GUARD entries, a process without a
// vDSO, a sparse reservation, the scheduling policy, the loginuid.
func TestMemTailFromCRIU(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	testutil.CRIU(t)
	for _, sc := range []string{"guard", "novdso", "sparse", "sched", "loginuid", "memfdpriv", "memfdpriv-closed", "memfdpriv-only", "execmemfd", "zombie-thread"} {
		t.Run(sc, func(t *testing.T) {
			t.Parallel()
			v := testutil.StartVictim(t, "memtail", sc)
			v.WaitReady(t)
			dir := t.TempDir()
			tree := testutil.MustTree(t, v.Pid)
			testutil.CriuDump(t, v.Pid, dir, "--network-lock", "nftables")
			v.Reap(t)
			testutil.ReapTasks(t, testutil.Pids(tree[1:]))
			testutil.RestoreDetached(t, dir, v)
			v.TermAndCheck(t)
		})
	}
}

// TestMemTailToCRIU restores with criu 4.2 what stasis dumped of the
// memtail scenarios: the images must carry them in criu's format.
func TestMemTailToCRIU(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	testutil.CRIU(t)
	for _, sc := range []string{"guard", "droppable", "novdso", "sparse", "sched", "loginuid", "execmemfd", "memfdpriv", "memfdpriv-closed", "memfdpriv-only", "zombie-thread"} {
		t.Run(sc, func(t *testing.T) {
			t.Parallel()
			v := testutil.StartVictim(t, "memtail", sc)
			v.WaitReady(t)
			dir := t.TempDir()
			tree := testutil.MustTree(t, v.Pid)
			testutil.Dump(t, v.Pid, dir)
			v.Reap(t)
			testutil.ReapTasks(t, testutil.Pids(tree[1:]))
			testutil.CriuRestoreDetached(t, dir, v, "--network-lock", "nftables")
			v.TermAndCheck(t)
		})
	}
}
