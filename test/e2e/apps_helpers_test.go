package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
	"github.com/stasis-cr/stasis/internal/testutil/require"
)

// Helpers of the application tests (java_test.go, mail_test.go,
// vnc_test.go): a round trip of a whole application tree by stasis or by
// the CRIU 4.2 reference, with the figures of each, so that a test logs
// both tools' dump and restore times and image sizes for the same run.

// cycle is what one checkpoint/restore round trip of an application cost.
type cycle struct {
	tool           string // "stasis" or "criu 4.2"
	dump, restore  time.Duration
	size           int64 // bytes in the images dir
	procs, threads int
}

func (c cycle) String() string {
	return fmt.Sprintf("%s: dump %v, restore %v, images %.1f MiB", c.tool,
		c.dump.Round(time.Millisecond), c.restore.Round(time.Millisecond), float64(c.size)/(1<<20))
}

// appCycle dumps the tree of v (which kills it), reaps it, restores it
// with -d and waits until every task is back with its threads, with stasis
// or, when criu is set, with the CRIU 4.2 reference; flags go to both the
// dump and the restore. The restored tasks are killed at the test's end.
// The images are not decoded by crit here (testutil.CheckImages): a JVM's
// 70 threads take a minute of python on a loaded CI machine, and the
// victim tests decode every kind of image already.
func appCycle(t *testing.T, v *testutil.Victim, criu bool, flags ...string) cycle {
	t.Helper()
	tree := testutil.TrackTree(t, v.Pid)
	dir := t.TempDir()
	c := cycle{tool: "stasis", procs: len(tree), threads: threadCount(tree)}
	if criu {
		c.tool = "criu 4.2"
		start := time.Now()
		testutil.CriuDump(t, v.Pid, dir, flags...)
		c.dump = time.Since(start)
	} else {
		c.dump = testutil.Dump(t, v.Pid, dir, flags...).Took
	}
	v.Reap(t)
	testutil.ReapTasks(t, testutil.Pids(tree[1:]))
	c.size = dirSize(t, dir)
	start := time.Now()
	if criu {
		testutil.CriuRestoreDetached(t, dir, v, flags...)
	} else {
		testutil.RestoreDetached(t, dir, v, flags...)
	}
	got := testutil.WaitTree(t, v.Pid, tree, false, 10*time.Second)
	c.restore = time.Since(start)
	testutil.Track(t, testutil.Pids(got[1:]), v.Pid)
	t.Logf("%d process(es), %d thread(s): %s", c.procs, c.threads, c)
	return c
}

// haveCRIU reports whether the CRIU 4.2 reference is there for the
// figures beside stasis'; under CI it must be.
func haveCRIU(t *testing.T) bool {
	t.Helper()
	if _, err := require.CRIUReference(); err != nil {
		if testutil.InCI() {
			t.Fatalf("%v (CI must have the reference)", err)
		}
		t.Logf("no CRIU 4.2 figures: %v", err)
		return false
	}
	return true
}

// artefactDir is where a test keeps files for a person to look at (the
// screenshots of vnc_test.go): $STASIS_ARTEFACTS/TEST if set, else a
// temp dir of the test's; the test logs it.
func artefactDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if root := os.Getenv("STASIS_ARTEFACTS"); root != "" {
		dir = filepath.Join(root, strings.ReplaceAll(t.Name(), "/", "_"))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("artefacts in %s", dir)
	return dir
}
