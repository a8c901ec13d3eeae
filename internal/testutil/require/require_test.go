package require

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCIEnvironment: under .ci/run (STASIS_CI set) the suite runs as root
// with every tool and the CRIU reference present, so that no test of it
// skipped; outside CI it reports what a run here leaves untested.
func TestCIEnvironment(t *testing.T) {
	miss := Missing()
	if InCI() {
		for _, m := range miss {
			t.Errorf("%s is set but this machine lacks %s", CIEnv, m)
		}
		return
	}
	if len(miss) == 0 {
		t.Logf("everything CI has is here: no test will skip for lack of root or a tool")
		return
	}
	t.Logf("not under CI (%s unset); the tests that need these skip: %s", CIEnv, strings.Join(miss, "; "))
}

// TestSkipOrFail: the guard fails under CI where it skips elsewhere. It
// runs itself as a child test binary with and without STASIS_CI.
func TestSkipOrFail(t *testing.T) {
	if os.Getenv("STASIS_TESTUTIL_SKIP_CHILD") != "" {
		SkipOrFail(t, "the child's reason")
		return
	}
	for _, ci := range []string{"", "1"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSkipOrFail$", "-test.v")
		cmd.Env = append(os.Environ(), "STASIS_TESTUTIL_SKIP_CHILD=1", CIEnv+"="+ci)
		out, err := cmd.CombinedOutput()
		s := string(out)
		switch {
		case ci == "" && (err != nil || !strings.Contains(s, "--- SKIP") || !strings.Contains(s, "the child's reason")):
			t.Errorf("without %s: want a skip with the reason, got %v\n%s", CIEnv, err, s)
		case ci == "1" && (err == nil || !strings.Contains(s, "--- FAIL") || !strings.Contains(s, "the child's reason")):
			t.Errorf("with %s=1: want a failure with the reason, got %v\n%s", CIEnv, err, s)
		}
	}
}

func TestLookTool(t *testing.T) {
	if _, err := LookTool("sh"); err != nil {
		t.Errorf("LookTool(sh): %v", err)
	}
	if p, err := LookTool("no-such-tool-xyz"); err == nil {
		t.Errorf("LookTool(no-such-tool-xyz) = %q, want an error", p)
	}
}

// TestREADMEMatchesCI: the test command the README gives is the one
// .ci/run runs (the line after its "# The README's test command:"), and
// it sets a -timeout (go test's default, 10 minutes per package, is
// within reach of the e2e package on a loaded machine).
func TestREADMEMatchesCI(t *testing.T) {
	ci, err := os.ReadFile(filepath.Join(moduleRoot(), ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(moduleRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(ci), "# The README's test command:\n")
	if !ok {
		t.Fatal(`.ci/run has no "# The README's test command:" line`)
	}
	cmd, _, _ := strings.Cut(after, "\n")
	if !strings.Contains(cmd, "go test") || !strings.Contains(cmd, "-timeout ") {
		t.Errorf(".ci/run's test command %q: want a go test with a -timeout", cmd)
	}
	if !strings.Contains(string(readme), "\n"+cmd+" ") && !strings.Contains(string(readme), "\n"+cmd+"\n") {
		t.Errorf("README.md does not give .ci/run's test command %q as a line of its own", cmd)
	}
	if !strings.Contains(string(ci), "export "+CIEnv+"=1") {
		t.Errorf(".ci/run does not export %s=1", CIEnv)
	}
}
