package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/testutil"
)

// mntContainer is a container with a mount namespace of its own, made
// with Debian tools only: `unshare --pid --fork --mount --uts --ipc` runs
// the static mntinit victim, which pivot_root's into a rootfs the test
// builds (busybox-static and mntinit), with a tmpfs, the test's ext
// directory bound from the host at /ext (an external mount), the host's
// /dev/null bound on /dev/null and a shared-propagation tree (see
// test/victims/mntinit.c).
type mntContainer struct {
	container   // its log is the ext directory's (logText)
	rootfs, ext string
}

// The flags criu 4.2 needs for the container, which stasis takes alike:
// its two bind mounts from the host are external, given again at
// restore with the rootfs.
var (
	mntDumpFlags = []string{"--external", "mnt[/ext]:EXT", "--external", "mnt[/dev/null]:NULL"}
)

func (c *mntContainer) restoreFlags() []string {
	return []string{"--root", c.rootfs, "--external", "mnt[EXT]:" + c.ext, "--external", "mnt[NULL]:/dev/null"}
}

var (
	mntinitOnce sync.Once
	mntinitBin  string
	mntinitErr  error
)

// buildMntinit builds the victim static: it runs from a rootfs with no libc.
func buildMntinit(t *testing.T) string {
	t.Helper()
	gcc := testutil.RequireTool(t, "gcc")
	mntinitOnce.Do(func() {
		dir, err := os.MkdirTemp("", "stasis-mntinit-")
		if err != nil {
			mntinitErr = err
			return
		}
		mntinitBin = filepath.Join(dir, "mntinit")
		src := filepath.Join(testutil.ModuleRoot(), "test", "victims", "mntinit.c")
		if out, err := exec.Command(gcc, "-static", "-O1", "-g", "-Wall", "-o", mntinitBin, src).CombinedOutput(); err != nil {
			mntinitErr = fmt.Errorf("gcc -static %s: %v\n%s", src, err, out)
		}
	})
	if mntinitErr != nil {
		t.Fatal(mntinitErr)
	}
	return mntinitBin
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	copyExecutable(t, src, dst, mode)
}

// copyExecutable copies the program src to dst with mode by cp: the test
// process must never hold a writable fd of a program it runs, since a
// child that a parallel test forks meanwhile keeps a copy of it until its
// exec, and an exec of the program then fails with ETXTBSY.
func copyExecutable(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	if out, err := exec.Command("cp", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp %s %s: %v\n%s", src, dst, err, out)
	}
	if err := os.Chmod(dst, mode); err != nil {
		t.Fatal(err)
	}
}

// startMntContainer builds the rootfs and starts the container (mode
// "plain", "badfs", "slave", "peer", "cgroup" or "net", see mntinit.c); overlay makes the rootfs an overlayfs mounted by
// the test on the host, as runtimes mount theirs.
func startMntContainer(t *testing.T, mode string, overlay bool) *mntContainer {
	t.Helper()
	testutil.RequireRoot(t)
	busybox := testutil.RequireTool(t, "busybox")
	unshare := testutil.RequireTool(t, "unshare")
	bin := buildMntinit(t)
	dir := t.TempDir()
	c := &mntContainer{container: container{exited: make(chan struct{})}, rootfs: filepath.Join(dir, "rootfs"), ext: filepath.Join(dir, "ext")}
	fill := c.rootfs
	if overlay {
		fill = filepath.Join(dir, "lower")
	}
	for _, d := range []string{fill, c.rootfs, c.ext, filepath.Join(dir, "upper"), filepath.Join(dir, "work")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"bin", "ext", "tmp", "dev", "proc", "sys", "rob"} {
		if err := os.Mkdir(filepath.Join(fill, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, busybox, filepath.Join(fill, "bin", "busybox"), 0o755)
	copyFile(t, bin, filepath.Join(fill, "mntinit"), 0o755)
	if err := os.WriteFile(filepath.Join(c.ext, "host.txt"), []byte("host file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if mode == "slave" || mode == "peer" {
		// Shared mounts on the host, of which the container's root and
		// /ext are slaves (external masters), or /ext a peer.
		dirs := []string{c.ext, c.rootfs}
		if mode == "peer" {
			dirs = dirs[:1]
		}
		for _, d := range dirs {
			if err := unix.Mount(d, d, "", unix.MS_BIND, ""); err != nil {
				t.Fatalf("bind %s: %v", d, err)
			}
			t.Cleanup(func() { unix.Unmount(d, unix.MNT_DETACH) })
			if err := unix.Mount("", d, "", unix.MS_SHARED, ""); err != nil {
				t.Fatalf("make %s shared: %v", d, err)
			}
		}
	}
	if overlay {
		opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", fill, filepath.Join(dir, "upper"), filepath.Join(dir, "work"))
		if err := unix.Mount("overlay", c.rootfs, "overlay", 0, opts); err != nil {
			t.Fatalf("mount the overlay rootfs: %v", err)
		}
		t.Cleanup(func() { unix.Unmount(c.rootfs, unix.MNT_DETACH) })
	}
	if err := testutil.CloseInheritedFDs(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "stage1.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	args := []string{"--pid", "--fork", "--mount", "--uts", "--ipc"}
	switch mode { // unshare's default is private
	case "slave":
		args = append(args, "--propagation", "slave")
	case "peer":
		args = append(args, "--propagation", "unchanged")
	case "net":
		args = append(args, "--net")
	}
	c.unshare = exec.Command(unshare, append(args, filepath.Join(c.rootfs, "mntinit"), "stage1", c.rootfs, c.ext, mode)...)
	if err := c.start(t, f); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the container's init to be ready", func() bool {
		_, err := os.Stat(filepath.Join(c.ext, "ready"))
		return err == nil
	})
	kids := testutil.Children(c.unshare.Process.Pid)
	if len(kids) != 1 {
		b, _ := os.ReadFile(filepath.Join(dir, "stage1.log"))
		t.Fatalf("unshare %d has children %v, want its init\n%s%s", c.unshare.Process.Pid, kids, b, c.logText())
	}
	c.init = kids[0]
	return c
}

func (c *mntContainer) logText() string {
	b, _ := os.ReadFile(filepath.Join(c.ext, "log"))
	return string(b)
}

func (c *mntContainer) waitGone(t *testing.T) {
	t.Helper()
	select {
	case <-c.exited:
	case <-time.After(testutil.MinWait):
		t.Fatalf("unshare %d still runs after its container was dumped", c.unshare.Process.Pid)
	}
	c.init = 0
}

// mountinfo is the mount table of process pid as it must come back: each
// mount by its mountpoint and its parent's instead of ids, devices of
// file systems without one and peer group numbers renumbered in order of
// appearance, sorted.
func mountinfo(t *testing.T, pid int) []string {
	t.Helper()
	ms, err := proc.ReadMountinfo(pid)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[int]proc.Mount{}
	for _, m := range ms {
		byID[m.ID] = m
	}
	sort.SliceStable(ms, func(i, j int) bool { return ms[i].MountPoint < ms[j].MountPoint })
	devs, groups := map[string]string{}, map[string]string{}
	var out []string
	for _, m := range ms {
		dev := fmt.Sprintf("%d:%d", m.Major, m.Minor)
		// devtmpfs is the host's one super block; any other without a
		// device is per mount or per namespace (sysfs: per network one).
		if m.Major == 0 && m.FSType != "devtmpfs" {
			if devs[dev] == "" {
				devs[dev] = fmt.Sprintf("anon%d", len(devs))
			}
			dev = devs[dev]
		}
		var opt []string
		for _, o := range m.Optional {
			k, id, ok := strings.Cut(o, ":")
			if ok {
				if groups[id] == "" {
					groups[id] = strconv.Itoa(len(groups) + 1)
				}
				o = k + ":" + groups[id]
			}
			opt = append(opt, o)
		}
		parent := "-"
		if p, ok := byID[m.ParentID]; ok {
			parent = p.MountPoint
		}
		out = append(out, strings.Join([]string{m.MountPoint, "on", parent, dev, m.Root, m.Options, strings.Join(opt, ","), m.FSType, m.Source, m.SuperOptions}, " "))
	}
	slices.Sort(out)
	return out
}

// endMntContainer ends the restored init host with SIGTERM: it checks
// itself and must exit 0 with a PASS. wait reaps it (nil: the caller
// waits).
func endMntContainer(t *testing.T, c *mntContainer, host int, wait bool) {
	t.Helper()
	passes := strings.Count(c.logText(), "PASS")
	if err := unix.Kill(host, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !wait {
		return
	}
	waitInitPass(t, host, passes, c.logText)
}

// checkMountsBack compares the restored container with what was dumped:
// mountinfo (modulo ids), the pids below the host's level, a mount
// namespace other than stasis'.
func checkMountsBack(t *testing.T, host int, wantMounts, wantPids []string) {
	t.Helper()
	if got := mountinfo(t, host); !slices.Equal(got, wantMounts) {
		t.Errorf("mountinfo of the restored container:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantMounts, "\n"))
	}
	if got := nsPids(t, host); !slices.Equal(got, wantPids) {
		t.Errorf("pids below the host's level after the restore:\n%q\nwant\n%q", got, wantPids)
	}
	self, _ := os.Readlink("/proc/self/ns/mnt")
	if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", host)); l == self || l == "" {
		t.Errorf("restored init %d is in mount namespace %q, stasis' is %q", host, l, self)
	}
}

// hostMounts is stasis' own mount table, to find a mount a failed
// restore left behind: the mounts under the temporary directory are
// other tests' (an overlay rootfs mounted meanwhile failed a run), but
// those under own, this test's directory.
func hostMounts(t *testing.T, own string) []string {
	t.Helper()
	ms, err := proc.ReadMountinfo(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	tmp := os.TempDir() + "/"
	var out []string
	for _, m := range ms {
		if strings.HasPrefix(m.MountPoint, tmp) && !strings.HasPrefix(m.MountPoint+"/", own+"/") {
			continue // another test's, running beside this one
		}
		out = append(out, m.MountPoint+" "+m.FSType+" "+m.Root)
	}
	slices.Sort(out)
	return out
}

func restoreMntContainer(t *testing.T, c *mntContainer, dir string) (int, time.Duration) {
	t.Helper()
	pidfile := filepath.Join(t.TempDir(), "pid")
	args := append([]string{"restore", "-D", dir, "-d", "--pidfile", pidfile, "-v4", "-o", filepath.Join(dir, "restore.log")}, c.restoreFlags()...)
	r := testutil.Run(t, 30*time.Second, args...)
	if r.Code != 0 {
		t.Fatalf("restore of the container failed\n%s\n%s", r, testutil.CriuErrors(nsLogText(filepath.Join(dir, "restore.log"))))
	}
	return readPidfile(t, pidfile), r.Took
}

// TestContainerMounts: a pivot_root'ed container with its own mount,
// pid, uts and ipc namespaces, dumped from the host by its init's pid
// and restored with --root and its external mounts: the mount tree
// comes back equal (modulo ids: tmpfs with their files, proc, sysfs,
// devpts, mqueue, binds of files and directories, masked paths, a peer
// group with a slave, propagation to both, unbindable and read-only
// mounts), pids inside unchanged, and the init checks from inside its
// cwd, its fds on the tmpfs, the external mount and a shared submount,
// and a ghost file of the tmpfs. A restore missing an external mount
// fails naming its key and leaves no task and no mount.
func TestContainerMounts(t *testing.T) {
	t.Parallel()
	c := startMntContainer(t, "plain", false)
	wantMounts, wantPids := mountinfo(t, c.init), nsPids(t, c.init)
	dir := t.TempDir()
	took := testutil.Dump(t, c.init, dir, mntDumpFlags...).Took
	c.waitGone(t)
	// crit only: stasis show wants entries in the ipc namespace's
	// images, which this container leaves empty.
	testutil.CritDecodeAll(t, dir)
	for _, img := range []string{"mountpoints-", "tmpfs-dev-"} {
		if m, _ := filepath.Glob(filepath.Join(dir, img+"*.img")); len(m) == 0 {
			t.Errorf("no %s*.img in the dump", img)
		}
	}
	t.Run("missing-external", func(t *testing.T) {
		before := hostMounts(t, filepath.Dir(c.rootfs))
		yards, _ := filepath.Glob(filepath.Join(os.TempDir(), ".stasis-mntns-*"))
		msg := testutil.RestoreFail(t, dir, "--root", c.rootfs, "--external", "mnt[NULL]:/dev/null")
		testutil.AssertContains(t, msg, `external mount "EXT"`, "mnt[EXT]:PATH")
		if after := hostMounts(t, filepath.Dir(c.rootfs)); !slices.Equal(after, before) {
			t.Errorf("host mounts changed by a failed restore:\n%q\nwere\n%q", after, before)
		}
		// The restores of the tests that run in parallel make (and
		// remove) yards of their own there meanwhile: a new one that
		// stays is the failed restore's.
		var left []string
		for deadline := time.Now().Add(testutil.MinWait); ; time.Sleep(50 * time.Millisecond) {
			after, _ := filepath.Glob(filepath.Join(os.TempDir(), ".stasis-mntns-*"))
			left = slices.DeleteFunc(after, func(y string) bool { return slices.Contains(yards, y) })
			if len(left) == 0 || time.Now().After(deadline) {
				break
			}
		}
		if len(left) > 0 {
			t.Errorf("the failed restore left %v", left)
		}
	})
	t.Run("missing-root", func(t *testing.T) {
		testutil.AssertContains(t, testutil.RestoreFail(t, dir, "--external", "mnt[EXT]:"+c.ext, "--external", "mnt[NULL]:/dev/null"), "--root")
	})
	host, rtook := restoreMntContainer(t, c, dir)
	t.Logf("stasis: dump %v, restore %v", took.Round(time.Millisecond), rtook.Round(time.Millisecond))
	checkMountsBack(t, host, wantMounts, wantPids)
	endMntContainer(t, c, host, true)
}

// TestContainerMountsOverlay: the same container on an overlayfs rootfs
// mounted on the host (as a runtime's), restored with --root on it.
func TestContainerMountsOverlay(t *testing.T) {
	t.Parallel()
	c := startMntContainer(t, "plain", true)
	wantMounts, wantPids := mountinfo(t, c.init), nsPids(t, c.init)
	if !strings.HasPrefix(wantMounts[0], "/ on - ") || !strings.Contains(wantMounts[0], " overlay ") {
		t.Fatalf("the container's root is not an overlayfs:\n%s", strings.Join(wantMounts, "\n"))
	}
	dir := t.TempDir()
	testutil.Dump(t, c.init, dir, mntDumpFlags...)
	c.waitGone(t)
	host, _ := restoreMntContainer(t, c, dir)
	checkMountsBack(t, host, wantMounts, wantPids)
	endMntContainer(t, c, host, true)
}

// TestContainerMountsPidNS3: one dump of the container restored three
// times side by side with restore --pidns: each copy in fresh pid, mount,
// uts and ipc namespaces, each with the dumped mount tree (its own tmpfs
// contents), each checking itself.
func TestContainerMountsPidNS3(t *testing.T) {
	t.Parallel()
	c := startMntContainer(t, "plain", false)
	wantMounts := mountinfo(t, c.init)
	dir := t.TempDir()
	testutil.Dump(t, c.init, dir, mntDumpFlags...)
	c.waitGone(t)
	copies := make([]*testutil.NSCopy, 3)
	for i := range copies {
		copies[i] = testutil.StartRestorePidNS(t, dir, c.restoreFlags()...)
	}
	seen := map[string]bool{}
	for _, cp := range copies {
		cp.WaitRestored(t, 1)
		if got := mountinfo(t, cp.HostPid); !slices.Equal(got, wantMounts) {
			t.Errorf("mountinfo of the copy %d:\n%s\nwant\n%s", cp.HostPid, strings.Join(got, "\n"), strings.Join(wantMounts, "\n"))
		}
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", cp.HostPid))
		if seen[l] {
			t.Errorf("copy %d shares mount namespace %s with another copy", cp.HostPid, l)
		}
		seen[l] = true
	}
	passes := strings.Count(c.logText(), "PASS")
	for _, cp := range copies {
		endMntContainer(t, c, cp.HostPid, false)
	}
	for _, cp := range copies {
		if code := cp.Wait(t, 15*time.Second); code != 0 {
			t.Errorf("copy %d exited %d\n%s", cp.HostPid, code, c.logText())
		}
	}
	if got := strings.Count(c.logText(), "PASS"); got != passes+3 {
		t.Errorf("%d PASS from the copies, want 3\n%s", got-passes, c.logText())
	}
}

// TestContainerMountsRefused: a container with a mount stasis cannot make
// again (a ramfs) fails the dump naming the mount and its type, and runs
// on.
func TestContainerMountsRefused(t *testing.T) {
	t.Parallel()
	c := startMntContainer(t, "badfs", false)
	msg := testutil.DumpFail(t, c.init, t.TempDir(), mntDumpFlags...)
	testutil.AssertContains(t, msg, "at /tmp/ram", "file system ramfs is not supported", "--external mnt[/tmp/ram]:KEY", "--enable-fs ramfs")
	assertRunning(t, c.init)
	t.Run("no-external", func(t *testing.T) {
		// Without the external keys criu's flags give, the binds from
		// the host are refused, naming the flag.
		msg := testutil.DumpFail(t, c.init, t.TempDir())
		testutil.AssertContains(t, msg, "a bind mount of", "from outside the container", "--external mnt[/")
		assertRunning(t, c.init)
	})
}

// TestContainerMountsCrossCRIU: the container dumped by criu 4.2 and
// restored by stasis, and the other way round, with the same flags for
// both tools; the times of both for the figures.
func TestContainerMountsCrossCRIU(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.CRIU(t)
	t.Run("criu-to-stasis", func(t *testing.T) {
		c := startMntContainer(t, "plain", false)
		wantMounts, wantPids := mountinfo(t, c.init), nsPids(t, c.init)
		dir := t.TempDir()
		args := append([]string{"dump", "-t", strconv.Itoa(c.init), "-D", dir, "--network-lock", "nftables"}, mntDumpFlags...)
		r := testutil.RunCRIU(t, 30*time.Second, dir, args...)
		if r.Code != 0 {
			t.Fatalf("criu dump of the container failed: %s\n%s", testutil.CriuErrors(nsLogText(r.Log)), r)
		}
		c.waitGone(t)
		host, rtook := restoreMntContainer(t, c, dir)
		t.Logf("criu 4.2 dump %v, stasis restore %v", r.Took.Round(time.Millisecond), rtook.Round(time.Millisecond))
		checkMountsBack(t, host, wantMounts, wantPids)
		endMntContainer(t, c, host, true)
	})
	t.Run("stasis-to-criu", func(t *testing.T) {
		c := startMntContainer(t, "plain", false)
		wantMounts, wantPids := mountinfo(t, c.init), nsPids(t, c.init)
		dir := t.TempDir()
		took := testutil.Dump(t, c.init, dir, mntDumpFlags...).Took
		c.waitGone(t)
		pidfile := filepath.Join(t.TempDir(), "pid")
		args := append([]string{"restore", "-D", dir, "-d", "--pidfile", pidfile, "--network-lock", "nftables"}, c.restoreFlags()...)
		r := testutil.RunCRIU(t, 30*time.Second, dir, args...)
		if r.Code != 0 {
			t.Fatalf("criu restore of the container failed: %s\n%s", testutil.CriuErrors(nsLogText(r.Log)), r)
		}
		t.Logf("stasis dump %v, criu 4.2 restore %v", took.Round(time.Millisecond), r.Took.Round(time.Millisecond))
		host := readPidfile(t, pidfile)
		checkMountsBack(t, host, wantMounts, wantPids)
		endMntContainer(t, c, host, true)
	})
	t.Run("criu-alone", func(t *testing.T) {
		c := startMntContainer(t, "plain", false)
		wantMounts := mountinfo(t, c.init)
		dir := t.TempDir()
		d := testutil.RunCRIU(t, 30*time.Second, dir, append([]string{"dump", "-t", strconv.Itoa(c.init), "-D", dir, "--network-lock", "nftables"}, mntDumpFlags...)...)
		if d.Code != 0 {
			t.Fatalf("criu dump failed: %s\n%s", testutil.CriuErrors(nsLogText(d.Log)), d)
		}
		c.waitGone(t)
		pidfile := filepath.Join(t.TempDir(), "pid")
		r := testutil.RunCRIU(t, 30*time.Second, dir, append([]string{"restore", "-D", dir, "-d", "--pidfile", pidfile, "--network-lock", "nftables"}, c.restoreFlags()...)...)
		if r.Code != 0 {
			t.Fatalf("criu restore failed: %s\n%s", testutil.CriuErrors(nsLogText(r.Log)), r)
		}
		t.Logf("criu 4.2 alone: dump %v, restore %v", d.Took.Round(time.Millisecond), r.Took.Round(time.Millisecond))
		host := readPidfile(t, pidfile)
		if got := mountinfo(t, host); !slices.Equal(got, wantMounts) {
			t.Errorf("criu's restored mountinfo differs:\n%s", strings.Join(got, "\n"))
		}
		endMntContainer(t, c, host, true)
	})
}

// TestContainerMountsAuto: with --ext-mount-map auto the binds from the
// host need no key: the dump finds them on the host, the restore binds
// them from there again (LXC dumps so).
func TestContainerMountsAuto(t *testing.T) {
	t.Parallel()
	c := startMntContainer(t, "plain", false)
	wantMounts, wantPids := mountinfo(t, c.init), nsPids(t, c.init)
	dir := t.TempDir()
	testutil.Dump(t, c.init, dir, "--ext-mount-map", "auto")
	c.waitGone(t)
	pidfile := filepath.Join(t.TempDir(), "pid")
	r := testutil.Run(t, 30*time.Second, "restore", "-D", dir, "-d", "--pidfile", pidfile, "--root", c.rootfs, "-v4", "-o", filepath.Join(dir, "restore.log"))
	if r.Code != 0 {
		t.Fatalf("restore failed\n%s\n%s", r, testutil.CriuErrors(nsLogText(filepath.Join(dir, "restore.log"))))
	}
	host := readPidfile(t, pidfile)
	checkMountsBack(t, host, wantMounts, wantPids)
	endMntContainer(t, c, host, true)
}

// TestContainerMountsExternalMasters: the container's rootfs and its
// /ext are slaves of shared mounts of the host (external masters). As
// with criu 4.2, no flag is needed for the root and external mounts: the
// restored ones are slaves of the host's peer groups again (a mount made
// under the host's ext shows in the container).
func TestContainerMountsExternalMasters(t *testing.T) {
	t.Parallel()
	externalPropagation(t, "slave", func(wantMounts []string) {
		for _, mp := range []string{"/ on - ", "/ext on / "} {
			i := slices.IndexFunc(wantMounts, func(l string) bool { return strings.HasPrefix(l, mp) })
			if i < 0 || !strings.Contains(wantMounts[i], "master:") {
				t.Fatalf("the container's %s is no slave:\n%s", mp, strings.Join(wantMounts, "\n"))
			}
		}
	})
}

// TestContainerMountsExternalSharing: the container's /ext is a peer of a
// shared mount of the host. As criu 4.2, no flag is needed for an
// external mount; the restored /ext is a peer of the host's again:
// mounts propagate both ways.
func TestContainerMountsExternalSharing(t *testing.T) {
	t.Parallel()
	externalPropagation(t, "peer", func(wantMounts []string) {
		if i := slices.IndexFunc(wantMounts, func(l string) bool { return strings.HasPrefix(l, "/ext on / ") }); i < 0 || !strings.Contains(wantMounts[i], "shared:") {
			t.Fatalf("the container's /ext is no peer of the host's:\n%s", strings.Join(wantMounts, "\n"))
		}
	})
}

// externalPropagation starts a container whose /ext is bound from the
// host in mode (a slave or a peer of the host's mount), has check look
// at its mounts, dumps it, restores it, and checks that a mount made
// under the host's /ext afterwards shows in the restored container.
func externalPropagation(t *testing.T, mode string, check func(wantMounts []string)) {
	c := startMntContainer(t, mode, false)
	wantMounts, wantPids := mountinfo(t, c.init), nsPids(t, c.init)
	check(wantMounts)
	dir := t.TempDir()
	testutil.Dump(t, c.init, dir, mntDumpFlags...)
	c.waitGone(t)
	host, _ := restoreMntContainer(t, c, dir)
	checkMountsBack(t, host, wantMounts, wantPids)
	sub := filepath.Join(c.ext, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("propagated", sub, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(sub, unix.MNT_DETACH)
	if got := strings.Join(mountinfo(t, host), "\n"); !strings.Contains(got, "/ext/sub on /ext ") {
		t.Errorf("a mount made under the host's /ext did not propagate into the restored container:\n%s", got)
	}
	endMntContainer(t, c, host, true)
}

// TestContainerMountsCgroup: a cgroup2 mount of the container comes back
// (the mount: the cgroups are the cgroup part's).
func TestContainerMountsCgroup(t *testing.T) {
	t.Parallel()
	c := startMntContainer(t, "cgroup", false)
	wantMounts, wantPids := mountinfo(t, c.init), nsPids(t, c.init)
	if !strings.Contains(strings.Join(wantMounts, "\n"), "/tmp/cg2 on /tmp ") {
		t.Fatalf("no cgroup2 mount in the container:\n%s", strings.Join(wantMounts, "\n"))
	}
	dir := t.TempDir()
	testutil.Dump(t, c.init, dir, mntDumpFlags...)
	c.waitGone(t)
	host, _ := restoreMntContainer(t, c, dir)
	checkMountsBack(t, host, wantMounts, wantPids)
	endMntContainer(t, c, host, true)
}

// TestContainerWhole is issue 13's container in one piece: pid, mount,
// uts, ipc and network namespaces, pivot_root'ed into a busybox rootfs
// with a tmpfs, binds from the host, a shared tree, a hostname and System
// V objects; a veth to a bridge of the host (with an address, a route, an
// nftables table) and a TCP server whose client outside keeps its
// connection (--tcp-established, --external veth[eth0]:OUT@BRIDGE); its
// tasks in cgroups with a memory limit (v1 here). Dumped from the host,
// killed, restored: the connection goes on with no reset, the mount
// table, pids, cgroups and limit are as they were, and the init checks
// the rest from inside.
func TestContainerWhole(t *testing.T) {
	t.Parallel()
	l := newCgLayout(t)
	c := startMntContainer(t, "net", false)
	n := (os.Getpid()+int(netSeq.Add(1))*37)%250 + 1
	nc := &netContainer{container: &container{init: c.init}, subnet: fmt.Sprintf("10.213.%d", n),
		bridge: fmt.Sprintf("sbr%d-%d", os.Getpid()%10000, n), out: fmt.Sprintf("svh%d-%d", os.Getpid()%10000, n)}
	t.Cleanup(func() {
		for _, name := range []string{nc.bridge, nc.out} {
			if l, err := netlink.LinkByName(name); err == nil {
				netlink.LinkDel(l)
			}
		}
	})
	nc.setUp(t)
	// Every task of the tree into the cgroups with the limit.
	procs := []string{filepath.Join(l.v2, l.v2Base, "main", "cgroup.procs")}
	if l.memMnt != "" {
		procs = append(procs, filepath.Join(l.memMnt, l.memBase, "main", "cgroup.procs"))
	}
	for _, pid := range append([]int{c.init}, testutil.Children(c.init)...) {
		for _, p := range procs {
			writeCg(t, p, strconv.Itoa(pid))
		}
	}
	wantMounts, wantPids, wantCg := mountinfo(t, c.init), nsPids(t, c.init), cgSnapshot(t, c.init)
	conn, err := net.DialTimeout("tcp", nc.subnet+".2:7000", 10*time.Second)
	if err != nil {
		t.Fatalf("connect to the container: %v\n%s", err, c.logText())
	}
	defer conn.Close()
	echo(t, conn, []byte("before the dump"))
	dir := t.TempDir()
	took := testutil.Dump(t, c.init, dir, append([]string{"--tcp-established"}, mntDumpFlags...)...).Took
	c.waitGone(t)
	pidfile := filepath.Join(t.TempDir(), "pid")
	args := append([]string{"restore", "-D", dir, "-d", "--pidfile", pidfile, "-v4", "-o", filepath.Join(dir, "restore.log")}, c.restoreFlags()...)
	r := testutil.Run(t, 30*time.Second, append(args, nc.restoreArgs()...)...)
	if r.Code != 0 {
		t.Fatalf("restore of the container failed\n%s\n%s", r, testutil.CriuErrors(nsLogText(filepath.Join(dir, "restore.log"))))
	}
	host := readPidfile(t, pidfile)
	t.Logf("stasis: dump %v, restore %v", took.Round(time.Millisecond), r.Took.Round(time.Millisecond))
	for i := 0; i < 3; i++ {
		echo(t, conn, []byte(strings.Repeat(strconv.Itoa(i), 1000+i)))
	}
	checkMountsBack(t, host, wantMounts, wantPids)
	sameSnapshot(t, "after the restore", cgSnapshot(t, host), wantCg)
	if b, err := os.ReadFile(l.memLimit()); err != nil || strings.TrimSpace(string(b)) != "268435456" {
		t.Errorf("memory limit of the restored cgroup: %q (%v), want 268435456", b, err)
	}
	nc.checkNet(t, host)
	endMntContainer(t, c, host, true)
}
