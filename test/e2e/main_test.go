package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// Tests that call t.Parallel() run together (go test -parallel: 4 in the
// README's command, as they mostly wait on their victims) once the others
// are done: they are the ones that share
// nothing with each other - no pty (a freed /dev/pts index is the next
// one any pty gets), terminal, fixed port, nftables table, network
// namespace, lease (the kernel breaks it on a wall-clock timeout), no
// loopback capture, no timing assertion and no fork storm. Their victims
// and restored tasks are all children of this process (the subreaper):
// every helper waits for its own pids only, and a failed restore's check
// for strays (testutil.RestoreFail) looks only at the pids of its images.
func TestMain(m *testing.M) {
	if pid := os.Getenv(flipXMMEnv); pid != "" {
		os.Exit(flipXMMHelper(pid))
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	defer testutil.RemoveBuilds()
	if err := testutil.CloseInheritedFDs(); err != nil {
		fmt.Fprintln(os.Stderr, "close inherited fds:", err)
		return 1
	}
	if _, err := testutil.BuildStasis(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// `restore -d` re-parents the restored task to the nearest subreaper:
	// being it lets the tests wait4 the task and read its exit status.
	if err := testutil.BecomeSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, "PR_SET_CHILD_SUBREAPER:", err)
		return 1
	}
	return m.Run()
}

// flipXMMEnv makes the test binary a helper that changes xmm3 of a victim.
// The ptrace work must not be done by the test process itself: it is the
// victim's parent, and its exec.Cmd.Wait would consume the ptrace stops.
const flipXMMEnv = "STASIS_E2E_FLIP_XMM3_OF_PID"

func flipXMMHelper(pid string) int {
	n, err := strconv.Atoi(pid)
	if err == nil {
		err = testutil.FlipXMMByte(n, 3)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// flipXMM3 runs the helper above on pid.
func flipXMM3(t *testing.T, pid int) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), flipXMMEnv+"="+strconv.Itoa(pid))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("flip xmm3 of pid %d: %v\n%s", pid, err, out)
	}
}
