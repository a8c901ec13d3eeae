package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stasis-cr/stasis/internal/testutil"
	"github.com/stasis-cr/stasis/internal/testutil/require"
)

// Helpers of the application tests (the round trip of a whole tree by
// stasis or the CRIU 4.2 reference is appRoundTrip, appckpt_helpers_test.go):
// whether the reference is there, and where artefacts go.

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
