package e2e

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
	"golang.org/x/sys/unix"
)

// TestPidNSCopies: images dumped with -R are restored 3 times at once with
// `restore --pidns` while the original still runs. Each copy lives in a
// pid namespace of its own where every task has its original pid: the
// harness checks NSpid and the copy's tree against the original's, and the
// victims check getpid() (and, in the tree, ppid, pgid, sid) from the
// inside. Each foreground `stasis restore` exits with its copy's root's 0
// after SIGTERM; the original then passes its own check. Without --pidns
// the same restore fails, naming a pid in use.
func TestPidNSCopies(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	for _, name := range []string{"clock", "tree"} {
		t.Run(name, func(t *testing.T) {
			v, tree := startTreeVictim(t, name)
			dir := t.TempDir()
			testutil.Dump(t, v.Pid, dir, "-R")
			testutil.AssertRunning(t, v.Pid)
			testutil.WaitTree(t, v.Pid, tree, false, time.Second) // -R left it as it was

			t.Run("conflict-without-pidns", func(t *testing.T) {
				msg := testutil.RestoreFail(t, dir)
				pids := testutil.Pids(tree)
				alt := make([]string, len(pids))
				for i, p := range pids {
					alt[i] = strconv.Itoa(p)
				}
				if !regexp.MustCompile(`(^|[^0-9])(` + strings.Join(alt, "|") + `)([^0-9]|$)`).MatchString(msg) {
					t.Errorf("message %q names none of the pids in use %v", strings.TrimSpace(msg), pids)
				}
			})

			copies := make([]*testutil.NSCopy, 3)
			for i := range copies {
				copies[i] = testutil.StartRestorePidNS(t, dir)
			}
			hosts := map[int]bool{}
			for i, c := range copies {
				c.WaitRestored(t, v.Pid)
				if hosts[c.HostPid] || c.HostPid == v.Pid {
					t.Fatalf("copy %d has host pid %d, already taken by another copy or the original", i, c.HostPid)
				}
				hosts[c.HostPid] = true
				testutil.WaitTree(t, c.HostPid, tree, true, 5*time.Second)
			}
			nss := map[string]bool{}
			for _, c := range copies {
				l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", c.HostPid))
				if err != nil {
					t.Fatal(err)
				}
				nss[l] = true
			}
			if len(nss) != 3 {
				t.Errorf("the 3 copies share pid namespaces: %v", nss)
			}
			testutil.AssertRunning(t, v.Pid)

			for i, c := range copies {
				if err := unix.Kill(c.HostPid, unix.SIGTERM); err != nil {
					t.Fatalf("kill copy %d (host pid %d): %v", i, c.HostPid, err)
				}
				if code := c.Wait(t, 15*time.Second); code != 0 {
					t.Errorf("copy %d (host pid %d): stasis restore exited %d, want its root's 0\nstderr: %s\n%s", i, c.HostPid, code, c.Stderr(), v.LogTail())
				}
			}
			if n := countIn(v, "PASS"); n != 3 {
				t.Errorf("%d PASS lines from the copies, want 3\n%s", n, v.LogTail())
			}
			v.TermAndCheck(t)
			assertTreeGone(t, tree)
		})
	}
}
