package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
	"golang.org/x/sys/unix"
)

// TestCredsAndSeccomp: a process that dropped from root to nobody (uids
// 65534/65534/2000, fsuid 2000, gids 65534/3000/3001, fsgid 3001, groups
// 4000 4001 65534) keeping CAP_NET_BIND_SERVICE (effective, inheritable,
// ambient; permitted and bounding also CAP_KILL), with securebits 0x17,
// no_new_privs and two seccomp filters installed with TSYNC, and so shared
// by its thread and by a child forked afterwards, comes back with all of it:
// /proc/TID/status of every thread of both processes is compared, and each
// checks itself: sysinfo() is still denied (EMLINK), a fork calling acct()
// is still killed by SIGSYS, binding a port below 1024 still works
// (creds.c).
func TestCredsAndSeccomp(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	// The victim creates its ready file after dropping its privileges, as
	// uid 65534 / fsuid 2000: it needs a directory anyone can write and
	// reach (t.TempDir's parent is 0700).
	rdir, err := os.MkdirTemp("", "stasis-e2e-creds-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(rdir) })
	if err := os.Chmod(rdir, 0o777); err != nil {
		t.Fatal(err)
	}
	ready := filepath.Join(rdir, "ready")
	v := testutil.StartProgram(t, testutil.BuildVictim(t, "creds"), ready)
	v.Ready = ready
	v.WaitReady(t)
	tree := testutil.TrackTree(t, v.Pid)
	if len(tree) != 2 || tree[0].Threads != 2 {
		t.Fatalf("want the process with 2 threads and its child:\n%s", testutil.FormatTree(tree))
	}
	before := credsOf(t, tree)
	for tid, c := range before {
		t.Logf("tid %d: %s", tid, c)
	}

	dir := t.TempDir()
	dumpTree(t, v, tree, dir)
	testutil.CheckImages(t, dir)
	restoreTree(t, dir, v, tree)
	after := credsOf(t, tree)
	for tid, c := range before {
		if after[tid] != c {
			t.Errorf("tid %d after the restore:\n  %s\nwant\n  %s", tid, after[tid], c)
		}
	}
	if len(after) != len(before) {
		t.Errorf("%d threads after the restore, %d before", len(after), len(before))
	}
	v.TermAndCheck(t)
	assertTreeGone(t, tree)
}

// TestSeccompStrict: a process in seccomp strict mode is restored in strict
// mode ("Seccomp: 1"): it still runs (exits 0 on SIGTERM through the exit
// syscall), and in a second restore of the same images a forbidden syscall
// (getpid, on SIGUSR1) still kills it with SIGKILL (strict.c).
func TestSeccompStrict(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v := testutil.StartVictim(t, "strict")
	v.WaitReady(t)
	waitSeccomp := func() {
		t.Helper()
		testutil.WaitFor(t, 2*time.Second, fmt.Sprintf("pid %d to show Seccomp: 1", v.Pid), func() bool {
			st, err := testutil.Status(v.Pid)
			return err == nil && st["Seccomp"] == "1"
		})
	}
	waitSeccomp()
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	testutil.CheckImages(t, dir)

	testutil.RestoreDetached(t, dir, v)
	waitSeccomp()
	v.TermAndCheck(t)

	testutil.RestoreDetached(t, dir, v)
	waitSeccomp()
	v.Signal(t, unix.SIGUSR1)
	if code := v.Wait(t, 5*time.Second); code != 128+int(unix.SIGKILL) {
		t.Errorf("after a forbidden syscall in strict mode the victim ended with %d, want %d (SIGKILL)\n%s", code, 128+int(unix.SIGKILL), v.LogTail())
	}
	if b, _ := os.ReadFile(v.Log); strings.Contains(string(b), "FAIL:") {
		t.Errorf("victim log:\n%s", b)
	}
}
