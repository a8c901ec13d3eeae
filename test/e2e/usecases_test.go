package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// The use cases of docs/usecases.md, each a script in examples/ that a
// user runs as it is; these tests run them with the stasis binary under
// test and small sizes, and check what they print. A script fails (exit
// != 0) when its own check fails: a result that differs from an
// uninterrupted run's, a copy that does not answer, a client that lost
// its connection.

// subreaper runs a command as a child of a python3 process that is a
// child subreaper (PR_SET_CHILD_SUBREAPER) and reaps every orphan that comes
// to it: the processes a script's dump ends, the trees its `restore -d`
// detaches. The test process is a subreaper too, but reaps only the pids of
// its own tests; under a real shell, init is the reaper. Once the command
// has exited, what it left running is killed. Exit: the command's.
const subreaper = `
import ctypes, os, signal, sys
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER): errno %d" % ctypes.get_errno())
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
code = None
while True:
    if code is not None:
        for p in os.listdir("/proc"):
            try:
                if p.isdigit() and open("/proc/%s/stat" % p).read().rsplit(")", 1)[1].split()[1] == str(os.getpid()):
                    os.kill(int(p), signal.SIGKILL)
            except (OSError, IndexError):
                pass
    try:
        p, st = os.wait()
    except ChildProcessError:
        break
    if p == pid:
        code = os.waitstatus_to_exitcode(st)
sys.exit(code if code >= 0 else 128 - code)
`

// runExample runs examples/NAME with args, STASIS and WORK set, under a
// reaper of its own (subreaper), and returns its output; it fails the
// test unless the script exits 0.
func runExample(t *testing.T, name string, env []string, args ...string) string {
	t.Helper()
	testutil.RequireRoot(t)
	for _, tool := range []string{"bash", "python3", "setsid"} {
		testutil.RequireTool(t, tool)
	}
	work := t.TempDir()
	script := filepath.Join(testutil.ModuleRoot(), "examples", name)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, program(t, "python3"), append([]string{"-c", subreaper, "bash", script}, args...)...)
	cmd.Env = append(os.Environ(), "STASIS="+testutil.StasisBin(t), "WORK="+work)
	cmd.Env = append(cmd.Env, env...)
	cmd.Dir = t.TempDir() // the -o logs of the script's stasis runs
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("examples/%s %s (%v):\n%s", name, strings.Join(args, " "), time.Since(start).Round(time.Millisecond), out.String())
	if err != nil {
		t.Fatalf("examples/%s: %v", name, err)
	}
	return out.String()
}

// TestUseCaseReboot: examples/reboot.sh, a pipeline dumped to disk, gone,
// the page cache dropped, restored, with the result of an uninterrupted
// run.
func TestUseCaseReboot(t *testing.T) {
	t.Parallel()
	out := runExample(t, "reboot.sh", nil, "150")
	testutil.AssertContains(t, out, "pid", ": gone", "== identical: nothing was lost")
}

// TestUseCaseSnapshotStart: examples/snapshot-start.sh, a warmed-up
// python3 service restored twice side by side with --pidns, each copy in a
// network namespace of its own, both answering at once.
func TestUseCaseSnapshotStart(t *testing.T) {
	t.Parallel()
	testutil.RequireTool(t, "ip")
	testutil.RequireTool(t, "nsenter")
	out := runExample(t, "snapshot-start.sh", []string{"MODEL=300000"}, "2")
	testutil.AssertContains(t, out, "cold start:", "== all 2 copies answer")
	if strings.Count(out, "served=2") != 2 {
		t.Errorf("want each copy's first answer to be its second request served (the first was the cold start's)")
	}
}

// TestUseCasePeriodic: examples/periodic.sh, dump -R every 0.3 s into
// numbered dirs chained by --prev-images-dir, the job killed, restored
// from the newest: the right result.
func TestUseCasePeriodic(t *testing.T) {
	t.Parallel()
	out := runExample(t, "periodic.sh", nil, "400", "0.3", "2")
	testutil.AssertContains(t, out, "checkpoint 2:", "--prev-images-dir ../1", "== identical")
}

// TestUseCaseNetnsMove: examples/netns-move.sh, a server moved from one
// network namespace ("host") to another under a connected client.
func TestUseCaseNetnsMove(t *testing.T) {
	t.Parallel()
	testutil.RequireTool(t, "ip")
	testutil.RequireTool(t, "nsenter")
	out := runExample(t, "netns-move.sh", nil, "1")
	testutil.AssertContains(t, out, "in network namespace stasis-mv-", "lines echoed in order on one connection", "== the service moved from A to B")
}
