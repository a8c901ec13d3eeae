package e2e

import (
	"os/exec"
	"syscall"
	"testing"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestDevices: fds on the devices a container has (devices.c): /dev/null,
// zero, random, urandom, full (criu's regular files by path), a pty
// from /dev/ptmx with its slave as the controlling terminal, and
// /dev/tty, its alias; each comes back on the same device with its mode
// and works: in stasis' namespaces, and in a user namespace (root mapped
// to root, setgroups "deny") with uts and ipc namespaces of its own. criu
// 4.2's outcome on the same victim is logged.
func TestDevices(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	t.Run("criu-4.2", func(t *testing.T) {
		testutil.CRIU(t)
		v := testutil.StartVictim(t, "devices")
		v.WaitReady(t)
		t.Logf("criu 4.2 on the same victim: %s", testutil.CriuOutcome(t, v))
	})
	for _, tc := range []struct {
		name string
		attr *syscall.SysProcAttr
	}{
		{"host", &syscall.SysProcAttr{Setsid: true}},
		{"userns", &syscall.SysProcAttr{Setsid: true, Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := testutil.StartVictimWith(t, func(c *exec.Cmd) { c.SysProcAttr = tc.attr }, "devices")
			v.WaitReady(t)
			dir := t.TempDir()
			testutil.Dump(t, v.Pid, dir)
			v.Reap(t)
			testutil.RestoreDetached(t, dir, v)
			v.TermAndCheck(t)
		})
	}
}
