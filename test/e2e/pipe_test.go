package e2e

import (
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestPipes: pipes inside the tree keep their buffered bytes (150000 of
// them in a 256 KiB pipe, written in many small writes), their capacity,
// their ends' flags, dup'ed and reopened descriptions, EOF and EPIPE
// states; a child streaming lines to its parent through a pipe goes on
// without a lost or doubled byte (pipe.c checks all of it from inside).
func TestPipes(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v := testutil.StartVictim(t, "pipe")
	v.WaitReady(t)
	tree := testutil.MustTree(t, v.Pid)
	dir := t.TempDir()
	dumpTree(t, v, tree, dir)
	testutil.CheckImages(t, dir)
	restoreTree(t, dir, v, tree)
	time.Sleep(50 * time.Millisecond) // let the stream go on
	v.TermAndCheck(t)
}

// TestFIFOs: named pipes opened read-only, write-only and read-write keep
// their buffered data, capacity and flags, and are still the FIFOs at
// their paths (fifo.c).
func TestFIFOs(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v := testutil.StartVictim(t, "fifo", t.TempDir())
	v.WaitReady(t)
	testutil.DumpRestore(t, v)
	v.TermAndCheck(t)
}

// TestPipesLeaveRunning: copying the buffers does not consume them: after
// a dump with -R the original tree still has every byte (pipe.c checks).
func TestPipesLeaveRunning(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, "pipe")
	v.WaitReady(t)
	testutil.Track(t, testutil.Pids(testutil.MustTree(t, v.Pid))[1:])
	testutil.Dump(t, v.Pid, t.TempDir(), "-R")
	time.Sleep(50 * time.Millisecond) // let the stream go on
	v.TermAndCheck(t)
}
