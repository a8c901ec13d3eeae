package e2e

import (
	"testing"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestSharedDescription: a file description shared by a parent, its child
// and a dup stays one: a write by the child after the restore moves the
// parent's offset (sharedfd.c).
func TestSharedDescription(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v := testutil.StartVictim(t, "sharedfd", t.TempDir())
	v.WaitReady(t)
	tree := testutil.MustTree(t, v.Pid)
	dir := t.TempDir()
	dumpTree(t, v, tree, dir)
	testutil.CheckImages(t, dir)
	restoreTree(t, dir, v, tree)
	v.TermAndCheck(t)
}
