package e2e

import (
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestManyFdsOverStasisLimit: a tree holding more open files than the
// restoring stasis may (3 processes with ~900 fds each, stasis run with
// RLIMIT_NOFILE 1024) restores: stasis closes its copy of each file once a
// task holds it and takes it back from that task when another needs the
// same description. Each process checks every fd from the inside: same
// number, file, offset and mode, dups still one description, the fds
// inherited from the root still the root's (manyfds.c).
func TestManyFdsOverStasisLimit(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "prlimit")
	t.Parallel()
	work := t.TempDir()
	v := testutil.StartVictim(t, "manyfds", work, "1024", "3", "780")
	v.WaitReady(t)
	tree := testutil.MustTree(t, v.Pid)
	dir := t.TempDir()
	dumpTree(t, v, tree, dir)
	testutil.RestoreDetachedUnder(t, []string{"prlimit", "--nofile=1024:1024"}, dir, v)
	got := testutil.WaitTree(t, v.Pid, tree, false, 5*time.Second)
	testutil.Track(t, testutil.Pids(got[1:]), v.Pid)
	v.TermAndCheck(t)
}
