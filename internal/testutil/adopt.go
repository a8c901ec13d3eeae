package testutil

import (
	"os"
	"strings"
	"testing"
	"time"
)

// Adopt makes the tree an RPC restore brought back (criu swrk or stasis
// swrk, which has exited once it replied) the victim's current
// incarnation: the task runs again under its pid with its comm and no
// tracer, as a child of the test process - the client itself with
// rst_sibling, or the subreaper it was re-parented to - whose exit status
// Wait then collects.
func (v *Victim) Adopt(t testing.TB) {
	t.Helper()
	v.expectEnded(t)
	v.restore, v.done, v.exited = nil, false, make(chan int, 1)
	WaitFor(t, 10*time.Second, "the restored task to run untraced", func() bool {
		st, err := Status(v.Pid)
		return err == nil && st["TracerPid"] == "0" && st["Name"] == v.Comm && !strings.HasPrefix(st["State"], "Z")
	})
	if ppid := mustStat(t, v.Pid).PPid; ppid != os.Getpid() {
		t.Errorf("restored pid %d has parent %d, want the test process %d", v.Pid, ppid, os.Getpid())
	}
	go waitPid(v.Pid, v.exited)
}
