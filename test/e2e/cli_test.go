package e2e

import (
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestCheck: `stasis check` reports that this kernel supports checkpoint
// and restore (every e2e machine does).
func TestCheck(t *testing.T) {
	testutil.RequireRoot(t)
	r := testutil.Run(t, 20*time.Second, "check")
	if r.Code != 0 {
		t.Fatalf("stasis check failed\n%s", r)
	}
	t.Logf("%s", r.Stdout+r.Stderr)
}
