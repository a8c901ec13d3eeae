package e2e

import (
	"testing"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestPty: two pty pairs inside one process keep their index, termios,
// window size, packet mode, lock and exclusive mode, and the bytes
// pending in both directions, line boundaries included (pty.c checks).
func TestPty(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, "pty")
	v.WaitReady(t)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	testutil.CheckImages(t, dir)
	testutil.RestoreDetached(t, dir, v)
	v.TermAndCheck(t)
}

// TestPtyLeaveRunning: the pending bytes a dump reads out of a pty are
// put back when the tree runs on (-R), with their line boundaries.
func TestPtyLeaveRunning(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, "pty")
	v.WaitReady(t)
	testutil.Dump(t, v.Pid, t.TempDir(), "-R")
	v.TermAndCheck(t)
}
