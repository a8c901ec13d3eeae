package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestMqueue: POSIX message queues (mqueue.c) across dump, kill and
// restore, in stasis' own ipc namespace and in one of the victim's own:
// the attributes of each fd, the mode, five messages of four priorities
// in their order, a notification registered (SIGUSR1 on the next
// message), and a queue no fd holds. criu 4.2 on the same victim (its
// outcome is logged) fails: "Can't lookup mount" for the open queue.
func TestMqueue(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tc := range []struct {
		name  string
		flags uintptr
	}{{"host-ipcns", 0}, {"own-ipcns", unix.CLONE_NEWIPC}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			prefix := fmt.Sprintf("/stasis-mq-%d-%s", os.Getpid(), tc.name)
			start := func(prefix string) *testutil.Victim {
				v := testutil.StartVictimWith(t, func(c *exec.Cmd) {
					c.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: tc.flags}
				}, "mqueue", prefix)
				v.WaitReady(t)
				return v
			}
			if tc.flags == 0 {
				// criu 4.2 first: its failed dump leaves the victim
				// running; SIGTERM makes it unlink its queues.
				t.Run("criu-4.2", func(t *testing.T) {
					testutil.CRIU(t)
					v := start(prefix + "-criu")
					t.Logf("criu 4.2 on the same victim: %s", testutil.CriuOutcome(t, v))
					v.Signal(t, unix.SIGTERM)
					v.Wait(t, 10*time.Second)
				})
			}
			v := start(prefix)
			dir := t.TempDir()
			testutil.Dump(t, v.Pid, dir)
			v.Reap(t)
			if tc.flags != 0 {
				if m, _ := filepath.Glob(filepath.Join(dir, "mqueue-*.img")); len(m) != 1 {
					t.Errorf("mqueue images %v, want one", m)
				} else {
					t.Logf("%s", strings.Join(strings.Fields(testutil.Run(t, 10*time.Second, "show", m[0]).Stdout), " "))
				}
			}
			testutil.RestoreDetached(t, dir, v)
			v.TermAndCheck(t)
		})
	}
}
