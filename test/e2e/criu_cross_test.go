package e2e

import (
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// crossCases are the victims both stasis and criu 4.2 checkpoint here.
func crossCases() []victimCase {
	var out []victimCase
	for _, c := range victimCases() {
		if c.label == "" {
			c.label = c.name
		}
		switch c.label {
		case "fdkind-io_uring", "fdkind-userfaultfd", "fdkind-perf_event", "fdkind-bpf-map", "fdkind-pidfd":
			continue // refused by stasis (and criu) at dump
		case "shmem-sysv":
			// criu 4.2 refuses a System V segment of an IPC namespace the
			// tree does not own ("doesn't live in IPC ns").
			continue
		}
		out = append(out, c)
	}
	return out
}

// TestCrossCRIUToStasis dumps each victim with criu 4.2 and restores it
// with stasis; the victim then checks its own state.
func TestCrossCRIUToStasis(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.CRIU(t)
	for _, c := range crossCases() {
		t.Run(c.label, func(t *testing.T) {
			v := testutil.StartVictim(t, c.name, c.args(t)...)
			v.WaitReady(t)
			if c.before != nil {
				c.before(t, v)
			}
			tree := testutil.MustTree(t, v.Pid)
			dir := t.TempDir()
			testutil.CriuDump(t, v.Pid, dir)
			v.Reap(t)
			testutil.ReapTasks(t, testutil.Pids(tree[1:]))
			testutil.ShowAll(t, dir)
			restoreTree(t, dir, v, tree)
			time.Sleep(50 * time.Millisecond)
			v.TermAndCheck(t)
		})
	}
}

// TestCrossStasisToCRIU dumps each victim with stasis and restores it with
// criu 4.2.
func TestCrossStasisToCRIU(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.CRIU(t)
	for _, c := range crossCases() {
		if c.label == "pipe" {
			// criu 4.2 sets O_ASYNC on a pipe with its own fd number: the
			// victim's SIGIO carries si_fd 3, not 64, after criu's restore
			// of criu's own dump too.
			continue
		}
		t.Run(c.label, func(t *testing.T) {
			v := testutil.StartVictim(t, c.name, c.args(t)...)
			v.WaitReady(t)
			if c.before != nil {
				c.before(t, v)
			}
			tree := testutil.MustTree(t, v.Pid)
			dir := t.TempDir()
			dumpTree(t, v, tree, dir)
			testutil.CriuRestoreDetached(t, dir, v)
			got := testutil.WaitTree(t, v.Pid, tree, false, 5*time.Second)
			testutil.Track(t, testutil.Pids(got[1:]), v.Pid)
			time.Sleep(50 * time.Millisecond)
			v.TermAndCheck(t)
		})
	}
}
