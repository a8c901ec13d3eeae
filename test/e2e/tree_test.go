package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestProcessTree: a tree of 3 levels and 20 live processes comes back with
// its pids, real parent links, sessions and process groups, including a
// group (D) and a session (E) whose leaders exited and members re-parented
// to the root (a child subreaper), and 2 zombies that are still zombies
// (the harness compares /proc before and after; no task may hold the
// leaders' pids). Every member then checks its pid, ppid, pgid, sid, comm,
// prctl attributes (no_new_privs, pdeath_signal, dumpable, child_subreaper)
// and the MAP_SHARED|MAP_ANONYMOUS region all of them wrote, through which
// it reports to the root; the parents reap the zombies and get their exit
// statuses (3, and killed by SIGUSR1), and the root exits 0 only if every
// member passed (tree.c).
func TestProcessTree(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	testProcessTree(t)
}

// TestProcessTreeMemfd: the same tree also shares a MAP_SHARED mapping of a
// memfd (its fd closed), written by every member.
func TestProcessTreeMemfd(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	testProcessTree(t, "memfd")
}

func testProcessTree(t *testing.T, args ...string) {
	t.Helper()
	v, tree := startTreeVictim(t, "tree", args...)
	if len(tree) != 22 {
		t.Fatalf("the tree has %d tasks, want 20 members and 2 zombies", len(tree))
	}
	leaderD := logPid(t, v, `leaderless group D ([0-9]+)`)
	leaderE := logPid(t, v, `session E ([0-9]+)`)
	dir := t.TempDir()
	dumpTree(t, v, tree, dir)
	checkImageSample(t, dir, v.Pid)
	restoreTree(t, dir, v, tree)
	testutil.AssertNoTask(t, leaderD)
	testutil.AssertNoTask(t, leaderE)
	v.TermAndCheck(t)
	assertTreeGone(t, tree)
}

// TestTreeCOWMemory: 8 children share 256 MiB of copy-on-write memory with
// their parent; after the restore the pages must still be shared, not one
// copy per process: the tree's total Pss may grow by at most 25 % (+16 MiB).
// Each process checks the whole region (cowtree.c). The figures are logged.
// Pss counts only the tree's own pages: other tests do not move it.
func TestTreeCOWMemory(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v, tree := startTreeVictim(t, "cowtree", "256", "8")
	if len(tree) != 9 {
		t.Fatalf("the tree has %d tasks, want 9", len(tree))
	}
	pss0, rss0 := testutil.PssKiB(t, testutil.Pids(tree))
	dir := t.TempDir()
	dumpTree(t, v, tree, dir)
	var pages int64
	files, _ := filepath.Glob(filepath.Join(dir, "pages-*.img"))
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			pages += st.Size()
		}
	}
	restoreTree(t, dir, v, tree)
	pss1, rss1 := testutil.PssKiB(t, testutil.Pids(tree))
	t.Logf("tree of 9: Pss %d MiB before the dump, %d MiB after the restore; Rss %d MiB / %d MiB; pages images %d MiB",
		pss0>>10, pss1>>10, rss0>>10, rss1>>10, pages>>20)
	if limit := pss0*5/4 + 16<<10; pss1 > limit {
		t.Errorf("the restored tree uses %d MiB (Pss), the original %d MiB: copy-on-write pages were duplicated", pss1>>10, pss0>>10)
	}
	// Nine processes read 256 MiB back each: 15 s was short at load 25.
	v.TermAndCheckWithin(t, 60*time.Second)
	assertTreeGone(t, tree)
}
