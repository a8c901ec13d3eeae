// Package e2e holds the end-to-end tests of stasis: real processes (the C
// victims of test/victims and ordinary programs) are dumped and restored by
// the stasis binary, built once per run, and then check from the inside that
// nothing was lost. They need root; see internal/testutil for the helpers.
//
// Run them with: go test ./test/e2e/ -v (or -run TestName).
//
// The tests run four at a time on two cores in CI, in one process, beside
// the unit tests of other packages. What that asks of a test, each rule
// learned from a test that failed CI:
//
//   - Every fd the test process opens is close-on-exec (a victim another
//     test forks would inherit it, and its dump rightly refuses a socket
//     connected outside the tree). go-criu makes its swrk socketpair without
//     SOCK_CLOEXEC: tests that use it are not parallel. Programs a test runs
//     are copied with cp, never written by the test process (ETXTBSY).
//   - Check what was dumped, not what the application may change by
//     itself: every tid of pstree.img back (waitAppTree,
//     testutil.WaitTreeDiff), not a thread count.
//   - Wait for a state with testutil.WaitFor (at least testutil.MinWait),
//     never for a time; a victim says ready only once all it sets up is
//     done. Deadlines are long: a condition that holds passes at once.
//   - Host-wide state is shared: compare only what the test made (mounts
//     under its own dirs, its own /tmp names), take ports from freePort
//     (below the ephemeral range), pids from testutil.FreePID (pid_max).
//     A test whose restore needs a host pty index back is not parallel.
//   - A victim takes the signal the test sends without a window between
//     checking for it and blocking: a flag polled every 10 ms (C),
//     signal.Notify (Go), sigwait with the signal blocked (Python), never
//     a handler and then pause().
//   - Between a dump and its restore, leave alone the size of any file the
//     victim may hold open (a shell can be frozen mid-redirection): a
//     restore refuses an open file whose size changed. Reset a counter with
//     a value of the same width, or not at all.
//   - A dump -R lets the tree run until the freeze: what the images hold
//     lies between the readings before and after the dump.
package e2e
