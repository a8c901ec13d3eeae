package e2e

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// nestedPid is the host pid of the container's pid 3 in mode "nestmnt":
// the process in a mount namespace nested in the container's.
func nestedPid(t *testing.T, c *mntContainer) int {
	t.Helper()
	for _, k := range testutil.Children(c.init) {
		st, err := testutil.Status(k)
		if err == nil && strings.HasSuffix(st["NSpid"], "\t3") {
			return k
		}
	}
	t.Fatalf("the container's init %d has no pid 3", c.init)
	return 0
}

// TestContainerNestedMountNSCRIU: what CRIU 4.2 does with a process of
// the container in a mount namespace of its own (test/victims/mntinit.c,
// mode nestmnt), dumped and restored with the same flags as the plain
// container; the nested process checks its tree from inside.
func TestContainerNestedMountNSCRIU(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.CRIU(t)
	t.Parallel()
	c := startMntContainer(t, "nestmnt", false)
	wantMounts, wantNested := mountinfo(t, c.init), mountinfo(t, nestedPid(t, c))
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
	t.Logf("criu 4.2: dump %v, restore %v", d.Took.Round(time.Millisecond), r.Took.Round(time.Millisecond))
	host := readPidfile(t, pidfile)
	c.init = host
	if got := mountinfo(t, host); !slices.Equal(got, wantMounts) {
		t.Errorf("criu's restored mountinfo differs:\n%s", strings.Join(got, "\n"))
	}
	if got := mountinfo(t, nestedPid(t, c)); !slices.Equal(got, wantNested) {
		t.Errorf("criu's restored nested mountinfo differs:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantNested, "\n"))
	}
	endMntContainer(t, c, host, true)
}

// TestContainerNestedMountNS: the same container with stasis: the nested
// namespace's tree (a private tmpfs with a file open and the cwd, a mount
// of the container's unmounted) comes back, in a namespace of its own,
// and the container's is unchanged; both processes check themselves.
func TestContainerNestedMountNS(t *testing.T) {
	t.Parallel()
	c := startMntContainer(t, "nestmnt", false)
	wantMounts, wantPids := mountinfo(t, c.init), nsPids(t, c.init)
	wantNested := mountinfo(t, nestedPid(t, c))
	dir := t.TempDir()
	took := testutil.Dump(t, c.init, dir, mntDumpFlags...).Took
	c.waitGone(t)
	// Two mount images, the container's and the nested namespace's,
	// each decoded by crit (only these: crit takes a second an image).
	ms, _ := filepath.Glob(filepath.Join(dir, "mountpoints-*.img"))
	if len(ms) != 2 {
		t.Fatalf("mount images %v, want the container's and the nested namespace's", ms)
	}
	critDecode(t, ms...)
	host, rtook := restoreMntContainer(t, c, dir)
	t.Logf("stasis: dump %v, restore %v", took.Round(time.Millisecond), rtook.Round(time.Millisecond))
	c.init = host
	checkMountsBack(t, host, wantMounts, wantPids)
	if got := mountinfo(t, nestedPid(t, c)); !slices.Equal(got, wantNested) {
		t.Errorf("restored nested mountinfo:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantNested, "\n"))
	}
	endMntContainer(t, c, host, true)
}

// critDecode decodes images with crit (Debian's criu), which must
// accept them.
func critDecode(t *testing.T, files ...string) {
	t.Helper()
	crit := testutil.RequireTool(t, "crit")
	for _, f := range files {
		if out, err := exec.Command(crit, "decode", "-i", f).CombinedOutput(); err != nil {
			t.Errorf("crit decode -i %s: %v\n%s", filepath.Base(f), err, out)
		}
	}
}

// TestContainerNestedMountNSCross: the container with a nested mount
// namespace dumped by CRIU 4.2 and restored by stasis, and the other way
// round: the images of both are the same format.
func TestContainerNestedMountNSCross(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.CRIU(t)
	t.Parallel()
	t.Run("criu-to-stasis", func(t *testing.T) {
		c := startMntContainer(t, "nestmnt", false)
		wantMounts, wantPids := mountinfo(t, c.init), nsPids(t, c.init)
		wantNested := mountinfo(t, nestedPid(t, c))
		dir := t.TempDir()
		r := testutil.RunCRIU(t, 30*time.Second, dir, append([]string{"dump", "-t", strconv.Itoa(c.init), "-D", dir, "--network-lock", "nftables"}, mntDumpFlags...)...)
		if r.Code != 0 {
			t.Fatalf("criu dump failed: %s\n%s", testutil.CriuErrors(nsLogText(r.Log)), r)
		}
		c.waitGone(t)
		host, rtook := restoreMntContainer(t, c, dir)
		t.Logf("criu 4.2 dump %v, stasis restore %v", r.Took.Round(time.Millisecond), rtook.Round(time.Millisecond))
		c.init = host
		checkMountsBack(t, host, wantMounts, wantPids)
		if got := mountinfo(t, nestedPid(t, c)); !slices.Equal(got, wantNested) {
			t.Errorf("restored nested mountinfo:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantNested, "\n"))
		}
		endMntContainer(t, c, host, true)
	})
	t.Run("stasis-to-criu", func(t *testing.T) {
		c := startMntContainer(t, "nestmnt", false)
		wantMounts, wantPids := mountinfo(t, c.init), nsPids(t, c.init)
		wantNested := mountinfo(t, nestedPid(t, c))
		dir := t.TempDir()
		took := testutil.Dump(t, c.init, dir, mntDumpFlags...).Took
		c.waitGone(t)
		pidfile := filepath.Join(t.TempDir(), "pid")
		r := testutil.RunCRIU(t, 30*time.Second, dir, append([]string{"restore", "-D", dir, "-d", "--pidfile", pidfile, "--network-lock", "nftables"}, c.restoreFlags()...)...)
		if r.Code != 0 {
			t.Fatalf("criu restore failed: %s\n%s", testutil.CriuErrors(nsLogText(r.Log)), r)
		}
		t.Logf("stasis dump %v, criu 4.2 restore %v", took.Round(time.Millisecond), r.Took.Round(time.Millisecond))
		host := readPidfile(t, pidfile)
		c.init = host
		checkMountsBack(t, host, wantMounts, wantPids)
		if got := mountinfo(t, nestedPid(t, c)); !slices.Equal(got, wantNested) {
			t.Errorf("restored nested mountinfo:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantNested, "\n"))
		}
		endMntContainer(t, c, host, true)
	})
}

// TestContainerNestedMountNSPivotRefused: a nested mount namespace that
// pivot_root'ed elsewhere than the container's root is refused at dump,
// naming it, and the container runs on.
func TestContainerNestedMountNSPivotRefused(t *testing.T) {
	t.Parallel()
	c := startMntContainer(t, "nestpivot", false)
	nested := nestedPid(t, c)
	msg := testutil.DumpFail(t, c.init, t.TempDir(), mntDumpFlags...)
	testutil.AssertContains(t, msg, "mount namespace of pid "+strconv.Itoa(nested), "pivot_root", "the tree was resumed")
	testutil.AssertRunning(t, c.init)
	testutil.AssertRunning(t, nested)
}
