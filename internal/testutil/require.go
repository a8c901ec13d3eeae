package testutil

import (
	"testing"

	"github.com/stasis-cr/stasis/internal/testutil/require"
)

// CIEnv is the variable .ci/run exports: under it a skip for missing root,
// a tool or a kernel feature is a failure (package require).
const CIEnv = require.CIEnv

// InCI reports whether the tests run under .ci/run.
func InCI() bool { return require.InCI() }

// SkipOrFail skips the test with the reason, or fails it under CI.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	require.SkipOrFail(t, format, args...)
}

// RequireRoot skips the test unless it runs as root (fails under CI):
// checkpoint and restore need ptrace of any process, clone3 with set_tid
// and /proc of every task.
func RequireRoot(t testing.TB) {
	t.Helper()
	require.Root(t)
}

// RequireRootFor is RequireRoot with the test's own reason.
func RequireRootFor(t testing.TB, why string) {
	t.Helper()
	require.RootFor(t, why)
}

// RequireTool returns the path of a program the test runs (on PATH, in
// /usr/sbin, Debian's postgresql dirs); without it the test skips (fails
// under CI) naming the package.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	return require.Tool(t, name)
}

// RequireCRIU returns the CRIU 4.2 reference: $STASIS_CRIU or
// ../shared/tools/criu-4.2/criu from the checkout.
func RequireCRIU(t testing.TB) string {
	t.Helper()
	return require.CRIU(t)
}
