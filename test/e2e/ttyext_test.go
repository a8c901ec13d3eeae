package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestTTYExternal: terminals outside the tree (ttyext.c), dumped with
// --external tty[RDEV:DEV] and restored with --inherit-fd fd[3]:KEY, the
// test giving the terminal: a virtual console, the system console, and a
// pty slave that is the session's controlling terminal, its master held
// by the test (a console as LXC or a terminal multiplexer outside the
// tree gives it). criu 4.2's result on the same victim is logged first.
func TestTTYExternal(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	for _, c := range []struct {
		scenario, dev string
	}{{"dev", "/dev/tty63"}, {"dev", "/dev/console"}, {"ctty", ""}, {"ctty-devtty", ""}} {
		name := c.scenario + strings.ReplaceAll(c.dev, "/", "-")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dev, master := c.dev, (*os.File)(nil)
			if dev == "" {
				master, dev = openPty(t)
			} else if _, err := os.Stat(dev); err != nil {
				t.Skipf("no %s on this machine: %v", dev, err)
			}
			ext, err := os.OpenFile(dev, os.O_RDWR|unix.O_NOCTTY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer ext.Close()
			var st unix.Stat_t
			if err := unix.Fstat(int(ext.Fd()), &st); err != nil {
				t.Fatal(err)
			}
			key := fmt.Sprintf("tty[%x:%x]", st.Rdev, st.Dev)
			// what the test does once the victim is back: type a line
			// on the master, then read what it writes back
			typed := func() {}
			if master != nil {
				typed = func() {
					if _, err := master.WriteString("ping\n"); err != nil {
						t.Error(err)
					}
				}
			}
			answered := func(who string) {
				if master == nil {
					return
				}
				got := readUntil(master, "pong", 5*time.Second)
				if !strings.Contains(got, "pong") {
					t.Errorf("%s: the master read %q, want the victim's pong", who, got)
				}
			}

			w := testutil.StartVictim(t, "ttyext", c.scenario, dev)
			w.WaitReady(t)
			out := testutil.CriuOutcomeWith(t, w, testutil.CriuRun{Dump: []string{"--external", key},
				Restore: []string{"--inherit-fd", "fd[3]:" + key}, Files: []*os.File{ext}, BeforeTerm: typed})
			if strings.HasPrefix(out, "PASS") {
				answered("criu 4.2")
			} else if unix.Kill(w.Pid, 0) == nil {
				// left running: it holds the terminal, which the
				// next victim must make its own
				w.Signal(t, unix.SIGKILL)
				w.Wait(t, 5*time.Second)
			}
			t.Logf("criu 4.2 on ttyext %s %s: %s", c.scenario, dev, out)

			v := testutil.StartVictim(t, "ttyext", c.scenario, dev)
			v.WaitReady(t)
			dir := t.TempDir()
			testutil.AssertContains(t, testutil.DumpFail(t, v.Pid, t.TempDir()), "--external "+key)
			testutil.AssertRunning(t, v.Pid)
			testutil.Dump(t, v.Pid, dir, "--external", key)
			v.Reap(t)
			testutil.CheckImages(t, dir)
			// The restore is given the terminal as fd 3 by a shell
			// that opens it and execs stasis.
			sh := []string{"/bin/sh", "-c", `exec 3<>"$0" && exec "$@"`, dev}
			testutil.RestoreDetachedUnder(t, sh, dir, v, "--inherit-fd", "fd[3]:"+key)
			typed()
			v.TermAndCheck(t)
			answered("stasis")
			t.Logf("stasis on ttyext %s %s: PASS", c.scenario, dev)
		})
	}
}

// openPty opens a pty pair's master (unlocked, raw) and returns it with
// the slave's path.
func openPty(t *testing.T) (*os.File, string) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	return m, fmt.Sprintf("/dev/pts/%d", n)
}

// readUntil reads f until what shows or the time is up.
func readUntil(f *os.File, what string, d time.Duration) string {
	var got []byte
	buf := make([]byte, 256)
	deadline := time.Now().Add(d)
	for !strings.Contains(string(got), what) && time.Now().Before(deadline) {
		f.SetReadDeadline(deadline)
		k, err := f.Read(buf)
		if err != nil {
			break
		}
		got = append(got, buf[:k]...)
	}
	return string(got)
}
