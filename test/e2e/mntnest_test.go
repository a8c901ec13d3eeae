package e2e

import (
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
