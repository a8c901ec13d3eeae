package linux

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil/require"
)

// TestInNamespace: fn sees the uts namespace of the pid it is given, and
// stasis' own stays as it was.
func TestInNamespace(t *testing.T) {
	var self unix.Utsname
	if err := InNamespace(os.Getpid(), unix.CLONE_NEWUTS, func() error { return unix.Uname(&self) }); err != nil {
		t.Fatalf("InNamespace(self) = %v", err)
	}
	require.RootFor(t, "unshare --uts")
	cmd := exec.Command(require.Tool(t, "unshare"), "--uts", "sh", "-c", "hostname stasis-setns-test && exec sleep 100")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var got string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var u unix.Utsname
		if err := InNamespace(cmd.Process.Pid, unix.CLONE_NEWUTS, func() error { return unix.Uname(&u) }); err != nil {
			t.Fatal(err)
		}
		if got = unix.ByteSliceToString(u.Nodename[:]); got == "stasis-setns-test" {
			break
		}
	}
	if got != "stasis-setns-test" {
		t.Errorf("hostname in the namespace of pid %d: %q", cmd.Process.Pid, got)
	}
	var after unix.Utsname
	unix.Uname(&after)
	if unix.ByteSliceToString(after.Nodename[:]) != unix.ByteSliceToString(self.Nodename[:]) {
		t.Errorf("stasis' own hostname changed to %q", after.Nodename[:])
	}
	if err := InNamespace(os.Getpid(), unix.CLONE_NEWNS, func() error { return nil }); err == nil || !strings.Contains(err.Error(), "not a kind") {
		t.Errorf("InNamespace(mount) = %v, want a refusal", err)
	}
}
