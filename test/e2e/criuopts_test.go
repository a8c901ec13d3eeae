package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestCRIUOptionRefused: a criu 4.2 option stasis does not implement,
// written as runtimes and scripts write it (--flag value, --flag=value,
// short form), stops the dump before it touches the tree, with one error
// that names the option; nothing is written and the victim runs on intact.
func TestCRIUOptionRefused(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	v, _ := counterVictim(t)
	tree := snapshotTree(t, v.Pid)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--timeout", "5"}, "dump: --timeout is not implemented yet (criu 4.2 option)"},
		{[]string{"--timeout=5"}, "dump: --timeout is not implemented yet (criu 4.2 option)"},
		{[]string{"-r", "/tmp"}, "dump: --root is not implemented yet (criu 4.2 option)"},
		{[]string{"--orphan-pts-master"}, "dump: --orphan-pts-master is not implemented yet"},
		{[]string{"--orphan-pts-master", "--stream"}, "dump: --orphan-pts-master, --stream are not implemented yet (criu 4.2 options)"},
	} {
		dir := filepath.Join(t.TempDir(), "images")
		msg := testutil.DumpFail(t, v.Pid, dir, c.args...)
		testutil.AssertContains(t, msg, c.want)
		if strings.Contains(msg, "unknown") {
			t.Errorf("%v: %s", c.args, msg)
		}
		if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
			t.Errorf("%v: the refused dump wrote %d files into %s", c.args, len(ents), dir)
		}
		assertUntouched(t, tree)
		testutil.AssertRunning(t, v.Pid)
	}
	// Hints change nothing: the dump goes through; --display-stats prints
	// the stats as criu does.
	dir := t.TempDir()
	r := testutil.Dump(t, v.Pid, dir, "-R", "--log-pid", "--ghost-fiemap", "--cpu-cap=none", "--display-stats")
	testutil.AssertContains(t, r.Stdout, "Displaying dump stats:\nFreezing time: ", "\nMemory pages written: ")
	assertUntouched(t, tree)
	v.TermAndCheck(t)
}

// TestCheckFeatureLikeCRIU: `stasis check --feature NAME` gives criu 4.2's
// answer (exit status, and "NAME is supported" on stdout) for names where
// both can do what the feature is for, and a "not supported" naming what
// stasis lacks where criu can and stasis cannot.
func TestCheckFeatureLikeCRIU(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	criu := testutil.RequireCRIU(t)
	criuCheck := func(name string) (string, int) {
		cmd := exec.Command(criu, "check", "--feature", name)
		cmd.Dir = t.TempDir()
		out, err := cmd.Output()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("criu check --feature %s: %v", name, err)
		}
		return string(out), code
	}
	for _, name := range []string{"mnt_id", "timerfd", "fdinfo_lock", "tcp_half_closed", "clone3_set_tid",
		"kcmp_epoll", "openat2", "network_lock_nftables", "timens", "compat_cr", "uffd", "uffd-noncoop", "no_such_feature"} {
		want, wantCode := criuCheck(name)
		r := testutil.Run(t, 20*time.Second, "check", "--feature", name)
		if r.Code != wantCode || r.Stdout != want {
			t.Errorf("--feature %s: stasis exit %d stdout %q, criu exit %d stdout %q\n%s", name, r.Code, r.Stdout, wantCode, want, r)
		}
	}
	// criu says yes where the kernel can; stasis cannot use it yet.
	for _, name := range []string{"tun"} {
		r := testutil.Run(t, 20*time.Second, "check", "--feature", name)
		if r.Code != 1 || r.Stdout != "" || !strings.HasPrefix(r.Stderr, name+" is not supported: stasis ") {
			t.Errorf("--feature %s:\n%s", name, r)
		}
		if _, code := criuCheck(name); code != 0 {
			t.Logf("criu 4.2 says %s is not supported either", name)
		}
	}
	r := testutil.Run(t, 20*time.Second, "check", "--feature", "list")
	if r.Code != 0 || !strings.Contains(r.Stdout, "pagemap_scan_guard_pages") {
		t.Errorf("--feature list:\n%s", r)
	}
}
