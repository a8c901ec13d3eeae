package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// siblingChildren dumps a counter with bin, restores it with -d -S from a
// shell that then lists its own children (builtin read: the shell forks
// nothing more), as LXC reads its /proc/self/task/TID/children once criu
// has exited; it returns that list, the root's pid replaced by ROOT.
func siblingChildren(t *testing.T, bin string) string {
	v, status := counterVictim(t)
	dir := t.TempDir()
	runTool(t, bin, "dump", "-t", strconv.Itoa(v.Pid), "-D", dir)
	testutil.RemoveCRIULockAtEnd(t, filepath.Join(dir, "dump.log"))
	v.Reap(t)
	from := testutil.ReadCounter(t, status)
	reset := resetCounterFile(t, status)
	script := `"$0" restore -D "$1" -d -S -o restore.log -v4 || exit 1; read -r c < /proc/$$/task/$$/children; echo "$c"`
	out, err := exec.Command("/bin/sh", "-c", script, bin, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("%s restore -d -S: %v\n%s\n%s", filepath.Base(bin), err, out, logTail(dir, "restore.log"))
	}
	// The shell has exited: the root is the test's (a subreaper) now.
	v.Adopt(t)
	expectCountingFrom(t, status, from, reset)
	v.TermAndCheck(t)
	return strings.ReplaceAll(strings.TrimSpace(string(out)), strconv.Itoa(v.Pid), "ROOT")
}

// TestRestoreSiblingOnlyChild: after `restore -d -S` has exited, the
// root is the only child it left to its parent, as with CRIU 4.2 (LXC
// takes the first child for the container's init): stasis' puppet is the
// process the parent started (puppet/split.go), not a child of its own.
func TestRestoreSiblingOnlyChild(t *testing.T) {
	testutil.RequireRoot(t)
	ref := testutil.CRIU(t)
	t.Parallel()
	var ours, theirs string
	t.Run("stasis", func(t *testing.T) { ours = siblingChildren(t, testutil.StasisBin(t)) })
	t.Run("criu", func(t *testing.T) { theirs = siblingChildren(t, ref) })
	if t.Failed() {
		return
	}
	if ours != "ROOT" || theirs != "ROOT" {
		t.Errorf("children of the restore's parent: stasis %q, criu 4.2 %q, want %q", ours, theirs, "ROOT")
	}
}

// TestRestoreSiblingFails: a sibling restore that fails once the puppet
// (the process the parent started) has been taken, here at the files of
// the tree (the counter's file changed size), exits non-zero with the
// error, and leaves its parent no child and nothing restored.
func TestRestoreSiblingFails(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	bin := testutil.StasisBin(t)
	v, status := counterVictim(t)
	dir := t.TempDir()
	runTool(t, bin, "dump", "-t", strconv.Itoa(v.Pid), "-D", dir)
	v.Reap(t)
	if err := os.WriteFile(status, []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `"$0" restore -D "$1" -d -S; echo "exit $?"; read -r c < /proc/$$/task/$$/children; echo "children [$c]"`
	out, err := exec.Command("/bin/sh", "-c", script, bin, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("sh: %v\n%s", err, out)
	}
	s := string(out)
	if !strings.Contains(s, "exit 1\n") || !strings.Contains(s, "children []") || !strings.Contains(s, status) {
		t.Fatalf("a failed restore -d -S: want exit 1, an error naming %s and no child left; got:\n%s", status, s)
	}
	t.Logf("%s", s)
	if _, err := os.Stat("/proc/" + strconv.Itoa(v.Pid)); err == nil {
		t.Errorf("pid %d exists after the failed restore", v.Pid)
	}
}
