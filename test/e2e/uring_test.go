package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestIOUring: an idle io_uring instance (its counters past several turns
// of both rings) comes back at the same fd and addresses with its
// counters, SQ array and unreaped CQEs, and takes a read and a NOP after
// the restore (uring.c); with "fork" a child shares the ring and its
// mappings and uses them after the restore. criu 4.2 refuses io_uring.
func TestIOUring(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	for _, mode := range []string{"idle", "unreaped", "nosqarray", "fork"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			v := testutil.StartVictim(t, "uring", t.TempDir(), mode)
			v.WaitReady(t)
			if mode != "fork" {
				testutil.DumpRestore(t, v)
				v.TermAndCheck(t)
				return
			}
			// The child holding the inherited ring is reaped too
			// before the restore, which needs its pid.
			tree := testutil.TrackTree(t, v.Pid)
			if len(tree) != 2 {
				t.Fatalf("want the victim and its child:\n%s", testutil.FormatTree(tree))
			}
			dir := t.TempDir()
			testutil.Dump(t, v.Pid, dir)
			v.Reap(t)
			testutil.ReapTasks(t, testutil.Pids(tree[1:]))
			testutil.CheckImages(t, dir)
			testutil.RestoreDetached(t, dir, v)
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

// dumpIdleRing is testutil.Dump, tried again while the dump is refused
// for an io_uring with requests in flight (an application's I/O between
// two idle moments), which leaves the tree running.
func dumpIdleRing(t *testing.T, pid int, dir string, flags ...string) time.Duration {
	t.Helper()
	for try := 1; ; try++ {
		log := filepath.Join(t.TempDir(), "dump.log")
		r := testutil.Run(t, 60*time.Second, append([]string{"dump", "-t", strconv.Itoa(pid), "-D", dir, "-v4", "-o", log}, flags...)...)
		if r.Code == 0 {
			t.Logf("dumped pid %d in %v (try %d)", pid, r.Took.Round(time.Millisecond), try)
			return r.Took
		}
		if try < 20 && r.Code == 1 && strings.Contains(r.Stderr, "io_uring") && strings.Contains(r.Stderr, "in flight") && testutil.ProcessAlive(pid) {
			t.Logf("try %d: %s", try, strings.TrimSpace(r.Stderr))
			time.Sleep(100 * time.Millisecond)
			continue
		}
		t.Fatalf("dump of pid %d failed\n%s", pid, r)
	}
}

// uringFds counts the io_uring fds of pid.
func uringFds(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); l == "anon_inode:[io_uring]" {
			n++
		}
	}
	return n
}
