package e2e

import (
	"strings"
	"testing"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestIOUring: an idle io_uring instance (its counters past several turns
// of both rings) comes back at the same fd and addresses with its
// counters, SQ array and unreaped CQEs, and takes a read and a NOP after
// the restore (uring.c). criu 4.2 refuses io_uring.
func TestIOUring(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	for _, mode := range []string{"idle", "unreaped"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			v := testutil.StartVictim(t, "uring", t.TempDir(), mode)
			v.WaitReady(t)
			testutil.DumpRestore(t, v)
			v.TermAndCheck(t)
		})
	}
}

// TestIOUringInFlight: a ring with a request in flight is refused by
// name (pid, fd, why) and the victim goes on with its ring.
func TestIOUringInFlight(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v := testutil.StartVictim(t, "uring", t.TempDir(), "inflight")
	v.WaitReady(t)
	msg := testutil.DumpFail(t, v.Pid, t.TempDir())
	for _, want := range []string{"fd 42 of pid", "io_uring", "in flight"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error does not say %q: %s", want, msg)
		}
	}
	v.TermAndCheck(t)
}
