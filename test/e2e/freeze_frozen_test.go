package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestCgroupsFreezeFrozen: --freeze-cgroup of a cgroup frozen already
// (containerd pauses a task before it checkpoints it; TestContainerd runs
// that flow): the dump takes it as criu does and leaves it frozen again;
// with -R the tree runs on once thawed, dumped and killed it is restored.
func TestCgroupsFreezeFrozen(t *testing.T) {
	t.Parallel()
	l := newCgLayoutFreezer(t, false)
	v, tree, before := startCgVictim(t, l)
	cg := filepath.Join(l.v2, l.v2Base)
	freeze := func(on bool) {
		t.Helper()
		val, want := "0", "frozen 0"
		if on {
			val, want = "1", "frozen 1"
		}
		writeCg(t, filepath.Join(cg, "cgroup.freeze"), val)
		testutil.WaitFor(t, 10*time.Second, "cgroup "+cg+" "+want, func() bool {
			e, _ := os.ReadFile(filepath.Join(cg, "cgroup.events"))
			return strings.Contains(string(e), want)
		})
	}
	assertFrozen := func(what string) {
		t.Helper()
		if b, _ := os.ReadFile(filepath.Join(cg, "cgroup.freeze")); strings.TrimSpace(string(b)) != "1" {
			t.Errorf("%s: cgroup %s is not frozen again: cgroup.freeze %q", what, cg, b)
		}
	}

	freeze(true)
	r := testutil.Dump(t, v.Pid, t.TempDir(), "--freeze-cgroup", cg, "-R")
	if log, _ := os.ReadFile(r.Log); !strings.Contains(string(log), "cgroup frozen and seized") {
		t.Errorf("the dump did not seize through %s (no \"cgroup frozen and seized\" in its log)", cg)
	}
	assertFrozen("after dump -R")
	freeze(false)
	testutil.AssertRunning(t, v.Pid)

	freeze(true)
	dir := t.TempDir()
	dumpTree(t, v, tree, dir, "--freeze-cgroup", cg)
	assertFrozen("after the dump")
	freeze(false)
	restoreCg(t, dir, v, tree)
	sameSnapshot(t, "after the restore", cgSnapshot(t, v.Pid), before)
	v.TermAndCheck(t)
}
