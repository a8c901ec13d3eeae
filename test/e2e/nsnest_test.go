package e2e

import (
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// startNestTree starts `sh -c 'unshare ARGS sleep 1000 & wait'` in a
// session of its own: a tree whose child is in namespaces of its own.
func startNestTree(t *testing.T, args string) (sh, child int) {
	t.Helper()
	testutil.RequireTool(t, "unshare")
	cmd := exec.Command("/bin/sh", "-c", "unshare "+args+" sleep 1000 & wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, k := range testutil.Children(cmd.Process.Pid) {
			syscall.Kill(k, syscall.SIGKILL)
		}
		cmd.Process.Kill()
		cmd.Wait()
	})
	var kids []int
	testutil.WaitFor(t, 5*time.Second, "the unshared child", func() bool {
		kids = testutil.Children(cmd.Process.Pid)
		if len(kids) != 1 {
			return false
		}
		st, err := testutil.ReadStat(kids[0])
		return err == nil && st.Comm == "sleep"
	})
	return cmd.Process.Pid, kids[0]
}

// TestNestedNSRefused: namespaces nested inside the dumped tree that
// CRIU 4.2 refuses too are refused, naming the kind, and the tree goes
// on: a user namespace (criu: "Can't dump nested user namespace"), and a
// mount namespace nested in the host's (the tree's root is in stasis'
// own: stasis restores nested mount namespaces inside a container's, see
// TestContainerNestedMountNS). CRIU 4.2 dumps the latter (logged here)
// but cannot restore it ("Can't restore sub-task in NS (cflags 20000)").
func TestNestedNSRefused(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.CRIU(t)
	t.Parallel()
	for _, c := range []struct{ name, args, want, criu string }{
		{"user", "-U -r", "user namespaces nested inside the tree", "Can't dump nested user namespace"},
		{"mount", "-m --propagation private", "a mount namespace nested in the host's", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			sh, child := startNestTree(t, c.args)
			msg := testutil.DumpFail(t, sh, t.TempDir())
			testutil.AssertContains(t, msg, c.want, strconv.Itoa(child))
			testutil.AssertRunning(t, sh)
			testutil.AssertRunning(t, child)
			dir := t.TempDir()
			r := testutil.RunCRIU(t, 30*time.Second, dir, "dump", "-t", strconv.Itoa(sh), "-D", dir, "--network-lock", "nftables", "-R")
			t.Logf("criu 4.2: exit %d: %s", r.Code, testutil.CriuErrors(nsLogText(r.Log)))
			if c.criu != "" && (r.Code == 0 || !strings.Contains(nsLogText(r.Log), c.criu)) {
				t.Errorf("criu 4.2 dumped it (exit %d) or failed otherwise, want %q", r.Code, c.criu)
			}
		})
	}
}
