package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// startUserContainer starts the nsuser victim as the init of a container
// made by `unshare ARGS`, in a directory every uid may use (the victim's
// uid 0 may be a host uid without rights on the test's directories). With
// rangeMap the test writes the maps into the user namespace as newuidmap
// does (0 100000 65536, setgroups left "allow") into the namespace the
// victim unshares as its own launcher (no unshare(1) then: it would exec
// before the map, which drops the capabilities), and the victim takes uid
// 0 inside.
func startUserContainer(t *testing.T, rangeMap bool, mode string, args ...string) (*container, string) {
	t.Helper()
	bin := testutil.BuildVictim(t, "nsuser")
	unshare := testutil.RequireTool(t, "unshare")
	if err := testutil.CloseInheritedFDs(); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "stasis-userns-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	vbin := filepath.Join(dir, "nsuser")
	if err := os.WriteFile(vbin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	ready := filepath.Join(dir, "ready")
	c := &container{log: filepath.Join(dir, "nsuser.log"), exited: make(chan struct{})}
	f, err := os.OpenFile(c.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	argv := append(append([]string{}, args...), vbin, ready, dir, mode)
	for try := 0; ; try++ {
		c.unshare = exec.Command(unshare, argv...)
		if rangeMap {
			c.unshare = exec.Command(vbin, ready, dir, "wait-map")
		}
		err := c.start(t, f)
		if err == nil {
			break
		}
		// The copy's write fd may still be open in a child another
		// parallel test is forking.
		if !errors.Is(err, syscall.ETXTBSY) || try == 100 {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if rangeMap {
		u := c.unshare.Process.Pid
		self, _ := os.Readlink("/proc/self/ns/user")
		testutil.WaitFor(t, 10*time.Second, "unshare to make its user namespace", func() bool {
			l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", u))
			return l != "" && l != self
		})
		for _, m := range []string{"uid_map", "gid_map"} {
			if err := os.WriteFile(fmt.Sprintf("/proc/%d/%s", u, m), []byte("0 100000 65536\n"), 0); err != nil {
				t.Fatalf("write the %s of unshare %d: %v", m, u, err)
			}
		}
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
	return c, dir
}

func procText(t *testing.T, pid int, name string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(strings.Fields(string(b)), " ")
}

// criuOnContainer runs criu 4.2's dump (-R) on the container and logs
// its outcome; the container runs on either way (criu resumes it).
func criuOnContainer(t *testing.T, c *container) {
	t.Helper()
	t.Run("criu-4.2", func(t *testing.T) {
		testutil.CRIU(t)
		dir := t.TempDir()
		r := testutil.RunCRIU(t, 30*time.Second, dir, "dump", "-t", strconv.Itoa(c.init), "-D", dir, "-R")
		if r.Code != 0 {
			t.Logf("criu 4.2 cannot dump the same container (%[2]v): %[1]s", testutil.CriuErrors(r.Log), r.Took.Round(time.Millisecond))
			return
		}
		t.Logf("criu 4.2 dumps the same container (-R, took %v)", r.Took.Round(time.Millisecond))
	})
}

// TestContainerUserTimeNS: a container in a user namespace with the
// caller mapped to root (`unshare --user --map-root-user`, setgroups
// "deny") and a time namespace with offsets (monotonic 100000 s, boottime
// 200000 s), with pid, uts and ipc namespaces: dumped from the host,
// kept dumped 4 s, restored. Inside, the victim finds its maps, setgroups
// "deny", ids, groups, capabilities, the owners of its files, and clocks
// that continued from where they were (no jump back by the offsets, no
// jump forward by the 4 s); from outside, new user and time namespaces
// with the same maps and the offsets less the time spent dumped.
func TestContainerUserTimeNS(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	c, _ := startUserContainer(t, false, "time", "--user", "--map-root-user", "--time", "--monotonic", "100000", "--boottime", "200000",
		"--pid", "--fork", "--uts", "--ipc")
	criuOnContainer(t, c)
	want := nsPids(t, c.init)
	uidMap, setgroups := procText(t, c.init, "uid_map"), procText(t, c.init, "setgroups")
	dir := t.TempDir()
	took := dumpContainer(t, c, dir)
	for _, img := range []string{"userns-", "timens-"} {
		m, _ := filepath.Glob(filepath.Join(dir, img+"*.img"))
		if len(m) == 0 {
			t.Errorf("no %s*.img in the dump", img)
		}
		for _, f := range m {
			t.Logf("%s: %s", filepath.Base(f), strings.Join(strings.Fields(testutil.Run(t, 10*time.Second, "show", f).Stdout), " "))
		}
	}
	t.Run("missing-userns", func(t *testing.T) {
		// A dump without its user namespace's image fails before
		// creating a task, naming the image.
		testutil.AssertContains(t, testutil.RestoreFail(t, imagesWithout(t, dir, "userns-")), "userns-")
	})
	time.Sleep(4 * time.Second)
	host, rtook := restoreContainer(t, dir)
	t.Logf("stasis: dump %v, restore %v", took.Round(time.Millisecond), rtook.Round(time.Millisecond))
	for _, kind := range []string{"user", "time"} {
		self, _ := os.Readlink("/proc/self/ns/" + kind)
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", host, kind)); l == self {
			t.Errorf("restored init %d is in stasis' %s namespace", host, kind)
		}
	}
	if got := procText(t, host, "uid_map"); got != uidMap {
		t.Errorf("uid_map %q, want %q", got, uidMap)
	}
	if got := procText(t, host, "setgroups"); got != setgroups {
		t.Errorf("setgroups %q, want %q", got, setgroups)
	}
	off := strings.Fields(procText(t, host, "timens_offsets"))
	if len(off) != 6 {
		t.Fatalf("timens_offsets %q", off)
	}
	mono, _ := strconv.Atoi(off[1])
	if mono > 100000-4 || mono < 100000-600 {
		t.Errorf("monotonic offset %d s: want 100000 s less the 4 s and more spent dumped", mono)
	}
	checkRestoredContainer(t, c, host, want)
}

// TestContainerUserRangeMap: a user namespace whose map is a range
// (0 100000 65536, written by the test as newuidmap does, setgroups
// "allow"): the victim's uid 0 is host uid 100000, its child's uid 1000
// host 101000, its groups {0, 5}, a file it chowned to 7:7 is host
// 100007's. The images hold the ids as the namespace sees them (as
// criu's do); the restore gives them back inside the new namespace.
func TestContainerUserRangeMap(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	c, vdir := startUserContainer(t, true, "wait-map")
	criuOnContainer(t, c)
	want := nsPids(t, c.init)
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(vdir, "chowned"), &st); err != nil || st.Uid != 100007 || st.Gid != 100007 {
		t.Fatalf("chowned is %d:%d on the host (%v), want 100007:100007", st.Uid, st.Gid, err)
	}
	dir := t.TempDir()
	dumpContainer(t, c, dir)
	out := testutil.Run(t, 30*time.Second, "show", filepath.Join(dir, fmt.Sprintf("core-%d.img", 1)))
	if !strings.Contains(out.Stdout, `"uid": 0`) || strings.Contains(out.Stdout, "100000") {
		t.Errorf("core-1.img does not hold uid 0 as the namespace sees it:\n%s", out.Stdout)
	}
	host, _ := restoreContainer(t, dir)
	if got := procText(t, host, "gid_map"); got != "0 100000 65536" {
		t.Errorf("gid_map %q", got)
	}
	if s := procText(t, host, "status"); !strings.Contains(s, "Uid: 100000 100000 100000 100000") {
		t.Errorf("restored init's ids on the host are not 100000:\n%s", s)
	}
	checkRestoredContainer(t, c, host, want)
}

// TestContainerTimeCrossCRIU: a container in a time namespace with
// offsets (and pid, uts, ipc namespaces), which criu 4.2 dumps: dumped by
// criu and restored by stasis, and the other way round; each time the
// victim's clocks continue from where they were (criu reads them some
// time after it froze the tree, which then shows as a jump forward: only
// a jump back, the offsets lost, is checked after criu's dump).
func TestContainerTimeCrossCRIU(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.CRIU(t)
	t.Parallel()
	args := []string{"--time", "--monotonic", "100000", "--boottime", "200000", "--pid", "--fork", "--uts", "--ipc"}
	t.Run("criu-to-stasis", func(t *testing.T) {
		c, _ := startUserContainer(t, false, "", args...)
		want := nsPids(t, c.init)
		dir := t.TempDir()
		r := testutil.RunCRIU(t, 30*time.Second, dir, "dump", "-t", strconv.Itoa(c.init), "-D", dir, "--network-lock", "nftables")
		if r.Code != 0 {
			t.Fatalf("criu dump failed: %s\n%s", testutil.CriuErrors(r.Log), r)
		}
		c.waitGone(t)
		time.Sleep(2 * time.Second)
		host, rtook := restoreContainer(t, dir)
		t.Logf("criu 4.2 dump %v, stasis restore %v", r.Took.Round(time.Millisecond), rtook.Round(time.Millisecond))
		checkRestoredContainer(t, c, host, want)
	})
	t.Run("stasis-to-criu", func(t *testing.T) {
		c, _ := startUserContainer(t, false, "time", args...)
		want := nsPids(t, c.init)
		dir := t.TempDir()
		dumpContainer(t, c, dir)
		time.Sleep(4 * time.Second)
		pidfile := filepath.Join(t.TempDir(), "pid")
		r := testutil.RunCRIU(t, 30*time.Second, dir, "restore", "-D", dir, "-d", "--pidfile", pidfile, "--network-lock", "nftables")
		if r.Code != 0 {
			t.Fatalf("criu restore failed: %s\n%s", testutil.CriuErrors(r.Log), r)
		}
		checkRestoredContainer(t, c, readPidfile(t, pidfile), want)
	})
}
