package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/testutil"
)

// container is a container made by `unshare --pid --fork --uts --ipc` with
// the nsinit victim as its init (pid 1 there), dumped from the host.
type container struct {
	unshare *exec.Cmd
	init    int // host pid of the init
	log     string
	exited  chan struct{}
}

func startContainer(t *testing.T, mode string) *container {
	t.Helper()
	bin := testutil.BuildVictim(t, "nsinit")
	unshare := testutil.RequireTool(t, "unshare")
	if err := testutil.CloseInheritedFDs(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready")
	c := &container{log: filepath.Join(dir, "nsinit.log"), exited: make(chan struct{})}
	f, err := os.OpenFile(c.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c.unshare = exec.Command(unshare, "--pid", "--fork", "--uts", "--ipc", bin, ready, mode)
	if err := c.start(t, f); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the container's init to be ready", func() bool {
		_, err := os.Stat(ready)
		return err == nil
	})
	kids := testutil.Children(c.unshare.Process.Pid)
	if len(kids) != 1 {
		t.Fatalf("unshare %d has children %v, want its init", c.unshare.Process.Pid, kids)
	}
	c.init = kids[0]
	t.Logf("container init: host pid %d\n%s", c.init, c.logText())
	return c
}

// start runs c.unshare with its output in f, in a session of its own;
// the end of the test kills it and the container's init, once known.
func (c *container) start(t *testing.T, f *os.File) error {
	c.unshare.Stdout, c.unshare.Stderr = f, f
	c.unshare.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.unshare.Start(); err != nil {
		return err
	}
	go func() { c.unshare.Wait(); close(c.exited) }()
	t.Cleanup(func() {
		if c.init != 0 {
			unix.Kill(c.init, unix.SIGKILL)
		}
		c.unshare.Process.Kill()
		<-c.exited
	})
	return nil
}

func (c *container) logText() string {
	b, _ := os.ReadFile(c.log)
	return string(b)
}

// nsPids lists every task and thread of the tree of host pid pid with its pids
// below the host's level (NSpid without its first field), sorted: what
// must not change across a dump and restore.
func nsPids(t *testing.T, pid int) []string {
	t.Helper()
	var out []string
	var walk func(int)
	walk = func(p int) {
		st, err := proc.ReadStatus(p)
		if err != nil {
			t.Fatalf("status of pid %d: %v", p, err)
		}
		pst := st
		tids, err := proc.Tasks(p)
		if err != nil {
			t.Fatalf("threads of pid %d: %v", p, err)
		}
		for _, tid := range tids {
			if tid != p {
				if st, err = proc.ReadStatus(tid); err != nil {
					t.Fatalf("status of tid %d: %v", tid, err)
				}
			}
			var s []string
			for _, n := range st.NSpid[1:] {
				s = append(s, strconv.Itoa(n))
			}
			out = append(out, strings.Join(s, " "))
		}
		// The namespace its children are born in: its own, or a child's
		// (the parent `unshare --pid --fork` leaves).
		own, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p))
		pfc, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid_for_children", p))
		if pfc != own {
			for _, k := range testutil.Children(p) {
				if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", k)); l == pfc {
					ks, _ := proc.ReadStatus(k)
					out = append(out, fmt.Sprintf("children of %v born in the namespace of %v", pst.NSpid[1:], ks.NSpid[1:]))
				}
			}
		}
		for _, k := range testutil.Children(p) {
			walk(k)
		}
	}
	walk(pid)
	slices.Sort(out)
	return out
}

// restoreContainer restores dir with stasis (-d) and returns the host pid
// of the restored init, a child of the test process (the subreaper).
func restoreContainer(t *testing.T, dir string) (int, time.Duration) {
	t.Helper()
	pidfile := filepath.Join(t.TempDir(), "pid")
	r := testutil.Run(t, 30*time.Second, "restore", "-D", dir, "-d", "--pidfile", pidfile, "-v4", "-o", filepath.Join(dir, "restore.log"))
	if r.Code != 0 {
		t.Fatalf("restore of the container failed\n%s\n%s", r, testutil.CriuErrors(nsLogText(filepath.Join(dir, "restore.log"))))
	}
	return readPidfile(t, pidfile), r.Took
}

func nsLogText(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func readPidfile(t *testing.T, pidfile string) int {
	t.Helper()
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL); var ws unix.WaitStatus; unix.Wait4(pid, &ws, 0, nil) })
	return pid
}

// checkRestoredContainer checks the restored init from outside (new
// namespaces of the same kinds, pids at every level), then ends it with
// SIGTERM: it must check itself and its tree and exit 0 with a PASS.
func checkRestoredContainer(t *testing.T, c *container, host int, want []string) {
	t.Helper()
	if got := nsPids(t, host); !slices.Equal(got, want) {
		t.Errorf("pids below the host's level after the restore:\n%q\nwant\n%q", got, want)
	}
	for _, kind := range []string{"pid", "uts", "ipc"} {
		self, _ := os.Readlink("/proc/self/ns/" + kind)
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", host, kind))
		if err != nil || l == self {
			t.Errorf("restored init %d: %s namespace %q (%v), stasis' is %q", host, kind, l, err, self)
		}
	}
	passes := strings.Count(c.logText(), "PASS")
	if err := unix.Kill(host, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitInitPass(t, host, passes, c.logText)
}

// dumpContainer dumps the container with stasis (killing it) and waits
// for its unshare to end.
func dumpContainer(t *testing.T, c *container, dir string) time.Duration {
	t.Helper()
	r := testutil.Dump(t, c.init, dir)
	c.waitGone(t)
	return r.Took
}

func (c *container) waitGone(t *testing.T) {
	t.Helper()
	select {
	case <-c.exited:
	case <-time.After(testutil.MinWait):
		t.Fatalf("unshare %d still runs after its container was dumped", c.unshare.Process.Pid)
	}
	c.init = 0
}

// TestContainerPidUtsIpc: a container with its own pid, uts and ipc
// namespaces, dumped from the host by its init's pid: every task keeps
// its pids inside (init 1, children, an orphan reparented to init), the
// hostname, domainname, ipc sysctls and System V objects (shm contents,
// keys, ids, modes and attachment; semaphore values; queued messages and
// their types) come back in new namespaces, checked from inside.
func TestContainerPidUtsIpc(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	c := startContainer(t, "flat")
	want := nsPids(t, c.init)
	dir := t.TempDir()
	took := dumpContainer(t, c, dir)
	testutil.CheckImages(t, dir)
	for _, img := range []string{"utsns-", "ipcns-var-", "ipcns-shm-", "ipcns-sem-", "ipcns-msg-", "pagemap-shmem-"} {
		if m, _ := filepath.Glob(filepath.Join(dir, img+"*.img")); len(m) == 0 {
			t.Errorf("no %s*.img in the dump", img)
		}
	}
	t.Run("missing-utsns", func(t *testing.T) {
		// A dump without its uts namespace's image (and without the
		// manifest, as criu writes none) fails before creating a task,
		// naming the image.
		testutil.AssertContains(t, testutil.RestoreFail(t, imagesWithout(t, dir, "utsns-")), "utsns-")
	})
	host, rtook := restoreContainer(t, dir)
	t.Logf("stasis: dump %v, restore %v", took.Round(time.Millisecond), rtook.Round(time.Millisecond))
	checkRestoredContainer(t, c, host, want)
}

// TestContainerNestedPidNS: the container's tree holds two more pid
// namespaces, one inside the other (3 levels below the host's): each
// task and thread keeps its pid at every level (clone3 set_tid with one
// entry per level), each nested init is pid 1 of its own.
func TestContainerNestedPidNS(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	c := startContainer(t, "nested")
	// 9 processes and a thread, 3 levels deep; 2 parents whose children
	// are born in a nested namespace.
	var want []string
	testutil.WaitFor(t, 10*time.Second, "the nested tree: 10 tasks, 3 levels deep, 2 parents of nested inits", func() bool {
		want = nsPids(t, c.init)
		deepest := 0
		for _, w := range want {
			if !strings.HasPrefix(w, "children") {
				deepest = max(deepest, len(strings.Fields(w)))
			}
		}
		return len(want) == 12 && deepest == 3
	})
	t.Logf("pids below the host's level: %q", want)
	dir := t.TempDir()
	dumpContainer(t, c, dir)
	testutil.CheckImages(t, dir) // crit skips the pstree extension
	host, _ := restoreContainer(t, dir)
	checkRestoredContainer(t, c, host, want)
}

// TestContainerCrossCRIU: the same container dumped by criu 4.2 and
// restored by stasis, and dumped by stasis and restored by criu 4.2
// (criu cannot dump nested pid namespaces: the flat container). criu
// needs nothing special for a pid namespace's root dumped from outside;
// --network-lock nftables because this host has no iptables.
func TestContainerCrossCRIU(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	testutil.CRIU(t)
	t.Run("criu-to-stasis", func(t *testing.T) {
		c := startContainer(t, "flat")
		want := nsPids(t, c.init)
		dir := t.TempDir()
		r := testutil.RunCRIU(t, 30*time.Second, dir, "dump", "-t", strconv.Itoa(c.init), "-D", dir, "--network-lock", "nftables")
		if r.Code != 0 {
			t.Fatalf("criu dump of the container failed: %s\n%s", testutil.CriuErrors(nsLogText(r.Log)), r)
		}
		c.waitGone(t)
		host, rtook := restoreContainer(t, dir)
		t.Logf("criu 4.2 dump %v, stasis restore %v", r.Took.Round(time.Millisecond), rtook.Round(time.Millisecond))
		checkRestoredContainer(t, c, host, want)
	})
	t.Run("stasis-to-criu", func(t *testing.T) {
		c := startContainer(t, "flat")
		want := nsPids(t, c.init)
		dir := t.TempDir()
		took := dumpContainer(t, c, dir)
		pidfile := filepath.Join(t.TempDir(), "pid")
		r := testutil.RunCRIU(t, 30*time.Second, dir, "restore", "-D", dir, "-d", "--pidfile", pidfile, "--network-lock", "nftables")
		if r.Code != 0 {
			t.Fatalf("criu restore of the container failed: %s\n%s", testutil.CriuErrors(nsLogText(r.Log)), r)
		}
		t.Logf("stasis dump %v, criu 4.2 restore %v", took.Round(time.Millisecond), r.Took.Round(time.Millisecond))
		host := readPidfile(t, pidfile)
		checkRestoredContainer(t, c, host, want)
	})
}

// TestContainerCriuTimes dumps and restores the same container with criu
// 4.2 alone, for the times beside stasis'.
func TestContainerCriuTimes(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	testutil.CRIU(t)
	c := startContainer(t, "flat")
	want := nsPids(t, c.init)
	dir := t.TempDir()
	d := testutil.RunCRIU(t, 30*time.Second, dir, "dump", "-t", strconv.Itoa(c.init), "-D", dir, "--network-lock", "nftables")
	if d.Code != 0 {
		t.Fatalf("criu dump failed: %s\n%s", testutil.CriuErrors(nsLogText(d.Log)), d)
	}
	c.waitGone(t)
	pidfile := filepath.Join(t.TempDir(), "pid")
	r := testutil.RunCRIU(t, 30*time.Second, dir, "restore", "-D", dir, "-d", "--pidfile", pidfile, "--network-lock", "nftables")
	if r.Code != 0 {
		t.Fatalf("criu restore failed: %s\n%s", testutil.CriuErrors(nsLogText(r.Log)), r)
	}
	t.Logf("criu 4.2: dump %v, restore %v", d.Took.Round(time.Millisecond), r.Took.Round(time.Millisecond))
	checkRestoredContainer(t, c, readPidfile(t, pidfile), want)
}

// TestNamespaceRefused: a task that unshared a pid namespace without
// forking its init fails the dump with an error naming the kind, and the
// tree runs on untouched (a mount namespace's refusals are
// TestContainerMountsRefused's).
func TestNamespaceRefused(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	for _, tc := range []struct{ flag, ns, kind, msg string }{
		{"--pid", "pid_for_children", "pid", "unshared a pid namespace and has not forked its init yet"},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			v := testutil.StartProgram(t, testutil.RequireTool(t, "unshare"), tc.flag, "sleep", "1000")
			pid := v.Pid
			self, _ := os.Readlink("/proc/self/ns/" + tc.ns)
			testutil.WaitFor(t, 5*time.Second, "unshare to enter its namespace and exec sleep", func() bool {
				l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, tc.ns))
				return l != self && testutil.Comm(pid) == "sleep"
			})
			msg := testutil.DumpFail(t, pid, t.TempDir())
			want := fmt.Sprintf("pid %d is in another %s namespace", pid, tc.kind)
			if tc.kind == "pid" {
				want = fmt.Sprintf("pid %d unshared a pid namespace", pid)
			}
			testutil.AssertContains(t, msg, want, tc.msg)
			assertRunning(t, pid)
		})
	}
}

// imagesWithout copies the images of dir but those whose name starts
// with prefix (and the checksums, which would name them) into a new
// dir: a dump with one image missing.
func imagesWithout(t *testing.T, dir, prefix string) string {
	t.Helper()
	bad := t.TempDir()
	copyImages(t, dir, bad, func(e os.DirEntry) bool {
		return !strings.HasPrefix(e.Name(), prefix) && e.Name() != "stasis-checksums.json"
	})
	return bad
}

// waitInitPass waits for the restored init host, sent SIGTERM, to exit 0
// having logged one PASS more than passes (its self-check).
func waitInitPass(t *testing.T, host, passes int, logText func() string) {
	t.Helper()
	var ws unix.WaitStatus
	done := make(chan error, 1)
	go func() { _, err := unix.Wait4(host, &ws, 0, nil); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("wait for restored init %d: %v", host, err)
		}
	case <-time.After(testutil.MinWait): // its check may take seconds on a loaded machine
		t.Fatalf("restored init %d did not end after SIGTERM\n%s", host, logText())
	}
	if !ws.Exited() || ws.ExitStatus() != 0 || strings.Count(logText(), "PASS") != passes+1 {
		t.Errorf("restored init ended with %#x, want exit 0 and a PASS\n%s", uint32(ws), logText())
	}
}
