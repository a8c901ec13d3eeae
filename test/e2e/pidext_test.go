package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestPidNSExternal: a runtime's pid namespace, as criu 4.2 does it. The
// namespace's init (a bash loop under `unshare --pid --fork`, which reaps
// the orphans the dump's kill leaves it) stays; a victim tree started
// inside it (nsenter, setsid) is dumped alone with --external
// pid[INO]:KEY, killed, and restored into the same namespace with
// --inherit-fd fd[N]:KEY, the test's fd of /proc/INIT/ns/pid. The victim
// (tree: 20 processes, zombies, sessions and groups) checks every pid,
// parent, group and session from the inside; the harness checks the
// root's NSpid and namespace. Without the key the restore is refused
// naming it, leaving nothing in the namespace. Dumped by criu 4.2 too
// (cross).
func TestPidNSExternal(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	for _, dumper := range []string{"stasis", "criu"} {
		t.Run(dumper, func(t *testing.T) {
			if dumper == "criu" {
				testutil.RequireCRIU(t)
			}
			testPidNSExternal(t, dumper)
		})
	}
}

func testPidNSExternal(t *testing.T, dumper string) {
	unshare := testutil.RequireTool(t, "unshare")
	nsenter := testutil.RequireTool(t, "nsenter")
	setsid := testutil.RequireTool(t, "setsid")
	bash := testutil.RequireTool(t, "bash")
	bin := testutil.BuildVictim(t, "tree")
	if err := testutil.CloseInheritedFDs(); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	c := &container{log: filepath.Join(tmp, "init.log"), exited: make(chan struct{})}
	f, err := os.OpenFile(c.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	c.unshare = exec.Command(unshare, "--pid", "--fork", bash, "-c", "while :; do sleep 1; done")
	err = c.start(t, f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the namespace's init to run bash", func() bool {
		kids := testutil.Children(c.unshare.Process.Pid)
		if len(kids) == 1 && testutil.Comm(kids[0]) == "bash" {
			c.init = kids[0]
		}
		return c.init != 0
	})
	nsf, err := os.Open(fmt.Sprintf("/proc/%d/ns/pid", c.init))
	if err != nil {
		t.Fatal(err)
	}
	defer nsf.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(nsf.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	ready := filepath.Join(tmp, "ready")
	enter := testutil.StartProgram(t, nsenter, "-t", strconv.Itoa(c.init), "-p", "--", setsid, bin, ready)
	var host int
	testutil.WaitFor(t, 10*time.Second, "the victim inside the namespace to be ready", func() bool {
		if kids := testutil.Children(enter.Pid); len(kids) == 1 {
			host = kids[0]
		}
		_, err := os.Stat(ready)
		return host != 0 && err == nil
	})
	vs, err := proc.ReadStatus(host)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs.NSpid) != 2 || vs.NSpid[1] == 1 {
		t.Fatalf("victim %d: NSpid %v, want two levels and not the init", host, vs.NSpid)
	}
	inner := vs.NSpid[1]
	ext := fmt.Sprintf("pid[%d]:ctpid", st.Ino)
	dir := t.TempDir()
	if dumper == "stasis" {
		msg := testutil.DumpFail(t, host, dir)
		testutil.AssertContains(t, msg, "--external pid["+strconv.FormatUint(st.Ino, 10)+"]:KEY")
		testutil.Dump(t, host, dir, "--external", ext)
	} else {
		testutil.CriuDump(t, host, dir, "--external", ext)
	}
	if code := enter.Wait(t, 10*time.Second); code == 0 {
		t.Fatalf("nsenter exited 0: the dump left the victim running\n%s", enter.LogTail())
	}
	// The init reaps the tree's orphans; the init's own sleep comes and goes.
	alone := func() bool {
		for _, p := range pidNSMembers(t, st.Ino) {
			if p != c.init && testutil.Comm(p) != "sleep" {
				return false
			}
		}
		return true
	}
	testutil.WaitFor(t, 10*time.Second, "the killed tree to be reaped in the namespace", alone)

	msg := testutil.RestoreFail(t, dir)
	testutil.AssertContains(t, msg, `key "ctpid"`, "--inherit-fd fd[N]:ctpid")
	if !alone() {
		t.Fatalf("the refused restore left tasks in the namespace: %v, want its init %d (and its sleep) only", pidNSMembers(t, st.Ino), c.init)
	}

	pidfile := filepath.Join(t.TempDir(), "pid")
	log := filepath.Join(t.TempDir(), "restore.log")
	cmd := exec.Command(testutil.StasisBin(t), "restore", "-D", dir, "-d", "--pidfile", pidfile,
		"--inherit-fd", "fd[3]:ctpid", "-v4", "-o", log)
	cmd.ExtraFiles = []*os.File{nsf}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("restore into the external pid namespace: %v\n%s\n%s", err, out, testutil.CriuErrors(nsLogText(log)))
	}
	restored := readPidfile(t, pidfile)
	t.Cleanup(func() { unix.Kill(restored, unix.SIGKILL) })
	rs, err := proc.ReadStatus(restored)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.NSpid) != 2 || rs.NSpid[1] != inner {
		t.Errorf("restored victim %d: NSpid %v, want pid %d in the namespace", restored, rs.NSpid, inner)
	}
	var rst unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/pid", restored), &rst); err != nil || rst.Ino != st.Ino {
		t.Errorf("restored victim %d is in pid namespace %d (%v), want %d", restored, rst.Ino, err, st.Ino)
	}
	if err := unix.Kill(restored, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// A child of the test process, the subreaper, once stasis exited.
	var code int
	testutil.WaitFor(t, 20*time.Second, "the restored victim to check itself", func() bool {
		var ws unix.WaitStatus
		p, err := linux.Wait4(restored, &ws, unix.WALL|unix.WNOHANG)
		if err == nil && p == restored {
			code = ws.ExitStatus()
			if ws.Signaled() {
				code = 128 + int(ws.Signal())
			}
			return true
		}
		return false
	})
	if code != 0 {
		t.Fatalf("restored victim exited %d, want 0\n%s", code, enter.LogTail())
	}
	if b, _ := os.ReadFile(enter.Log); !strings.Contains(string(b), "PASS") {
		t.Errorf("victim log has no PASS\n%s", enter.LogTail())
	}
}

// pidNSMembers lists the host pids of the processes in pid namespace ino.
func pidNSMembers(t *testing.T, ino uint64) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/ns/pid", pid), &st) == nil && st.Ino == ino {
			out = append(out, pid)
		}
	}
	return out
}
