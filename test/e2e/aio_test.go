package e2e

import (
	"testing"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestAIO: a Linux AIO context with completions not yet reaped keeps its
// id (the ring's address) and its pending completions, in order, after
// the restore, and takes new requests (aio.c).
func TestAIO(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v := testutil.StartVictim(t, "aio", t.TempDir())
	v.WaitReady(t)
	testutil.DumpRestore(t, v)
	v.TermAndCheck(t)
}
