package e2e

import (
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

func TestZZCRIUToCRIU(t *testing.T) {
	for _, c := range crossCases() {
		t.Run(c.label, func(t *testing.T) {
			v, after := c.startCross(t)
			tree := testutil.MustTree(t, v.Pid)
			dir := t.TempDir()
			testutil.CriuDump(t, v.Pid, dir, c.flags...)
			v.Reap(t)
			testutil.ReapTasks(t, testutil.Pids(tree[1:]))
			testutil.CriuRestoreDetached(t, dir, v, c.flags...)
			got := testutil.WaitTree(t, v.Pid, tree, false, 5*time.Second)
			testutil.Track(t, testutil.Pids(got[1:]), v.Pid)
			if after != nil {
				after(t, v)
			}
			time.Sleep(50 * time.Millisecond)
			v.TermAndCheck(t)
		})
	}
}
