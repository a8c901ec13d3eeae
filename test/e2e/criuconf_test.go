package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// actionScript writes a script that appends one line per action to log:
// the action, ROOT if CRTOOLS_INIT_PID is the root's pid (else its value),
// and "dir" if CRTOOLS_IMAGE_DIR is the images directory.
func actionScript(t *testing.T, log string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "action.sh")
	s := `#!/bin/sh
d=nodir
[ -f "$CRTOOLS_IMAGE_DIR/marker" ] && d=dir
echo "$CRTOOLS_SCRIPT_ACTION ${CRTOOLS_INIT_PID:-none} $d" >> ` + log + "\n"
	if err := os.WriteFile(p, []byte(s), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// runTool runs bin with args and fails the test on a non-zero exit.
func runTool(t *testing.T, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
}

// configScripts dumps a counter with leave-running and an action script
// both set in a --config file, dumps it again (killed) with the script on
// the command line, restores it detached as a sibling (-d -S) with the
// script; it returns the actions each step saw, the pid replaced by ROOT.
func configScripts(t *testing.T, bin string) []string {
	v, status := counterVictim(t)
	log := filepath.Join(t.TempDir(), "actions")
	script := actionScript(t, log)
	conf := filepath.Join(t.TempDir(), "my.conf")
	body := "# criu syntax: long options without --\nleave-running   # keep it running\naction-script \"" + script + "\"\n"
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	dirR, dir := t.TempDir(), t.TempDir()
	for _, d := range []string{dirR, dir} {
		os.WriteFile(filepath.Join(d, "marker"), nil, 0o644)
	}
	runTool(t, bin, "dump", "-t", strconv.Itoa(v.Pid), "-D", dirR, "--config", conf, "--no-default-config", "-v4", "-o", "dump.log")
	testutil.RemoveCRIULockAtEnd(t, filepath.Join(dirR, "dump.log"))
	testutil.AssertRunning(t, v.Pid)
	n := testutil.ReadCounter(t, status)
	testutil.WaitFor(t, 2*time.Second, "the counter to go on (leave-running from --config)", func() bool {
		return testutil.ReadCounter(t, status) > n+2
	})
	runTool(t, bin, "dump", "-t", strconv.Itoa(v.Pid), "-D", dir, "--action-script", script, "-v4", "-o", "dump.log")
	testutil.RemoveCRIULockAtEnd(t, filepath.Join(dir, "dump.log"))
	v.Reap(t)
	from := testutil.ReadCounter(t, status)
	reset := resetCounterFile(t, status)
	runTool(t, bin, "restore", "-D", dir, "-d", "-S", "--action-script", script)
	v.Adopt(t)
	expectCountingFrom(t, status, from, reset)
	v.TermAndCheck(t)
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i, l := range lines {
		lines[i] = strings.ReplaceAll(l, " "+strconv.Itoa(v.Pid)+" ", " ROOT ")
	}
	return lines
}

// TestConfigActionScripts: criu's configuration file (--config, with
// criu's syntax: comments, quotes) and --action-script, with stasis and
// with CRIU 4.2: the same actions in the same order with the same
// environment (CRTOOLS_SCRIPT_ACTION, CRTOOLS_INIT_PID,
// CRTOOLS_IMAGE_DIR); restore -d -S makes the root the test's child.
func TestConfigActionScripts(t *testing.T) {
	testutil.RequireRoot(t)
	ref := testutil.CRIU(t)
	var ours, theirs []string
	t.Run("stasis", func(t *testing.T) { ours = configScripts(t, testutil.StasisBin(t)) })
	t.Run("criu", func(t *testing.T) { theirs = configScripts(t, ref) })
	if t.Failed() {
		return
	}
	t.Logf("stasis actions: %v", ours)
	if !slices.Equal(ours, theirs) {
		t.Errorf("actions: stasis %v, criu 4.2 %v", ours, theirs)
	}
}
