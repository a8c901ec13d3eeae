package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// containerd (Debian's, its runc shim) drives stasis installed as `criu`
// on $PATH, unchanged: a busybox container from an OCI archive the test
// writes (`ctr images import`, offline), `ctr containers checkpoint
// --task --rw` (containerd pauses the task, checkpoints it, resumes it:
// the cgroup is frozen when criu gets it), then the container deleted
// and `ctr containers restore --live --rw` from the checkpoint image.
// The same with CRIU 4.2 in the same run. A containerd of the test's own
// (root, state, socket, config); runs alone, as TestRunc.

type ctrEnv struct {
	t      *testing.T
	ctr    string
	sock   string
	ns     string
	daemon *exec.Cmd
	times  runtimeTimes
	execN  int
}

func newCtrEnv(t *testing.T, criu string, times runtimeTimes) *ctrEnv {
	t.Helper()
	e := &ctrEnv{t: t, ctr: testutil.RequireTool(t, "ctr"), times: times}
	containerd := testutil.RequireTool(t, "containerd")
	testutil.RequireTool(t, "runc")
	dir := t.TempDir()
	e.sock = filepath.Join(dir, "containerd.sock")
	e.ns = fmt.Sprintf("stasis-e2e-%d-%s", os.Getpid(), filepath.Base(t.Name()))
	// Only what a container needs: no CRI (it wants CNI), no tracing,
	// no snapshotter this machine lacks.
	conf := filepath.Join(dir, "config.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), e.sock, e.sock+".ttrpc")), 0o644)
	// containerd puts the tasks in cgroup /NAMESPACE/ID.
	hostLeftovers(t, "/"+e.ns)
	log, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	e.daemon = exec.Command(containerd, "--config", conf)
	e.daemon.Env = append(os.Environ(), "PATH="+criuDir(t, criu)+":"+os.Getenv("PATH"), "CRIU_CONFIG_FILE="+criuConf(t))
	e.daemon.Stdout, e.daemon.Stderr = log, log
	if err := e.daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.run("tasks", "kill", "--signal", "SIGKILL", ctrID)
		testutil.WaitFor(t, 10*time.Second, "the task to stop", func() bool { return e.status(ctrID) != "RUNNING" })
		e.run("tasks", "delete", ctrID)
		e.run("containers", "delete", ctrID)
		e.daemon.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { e.daemon.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			e.daemon.Process.Kill()
			<-done
		}
		waitNoProcessMentions(dir, 10*time.Second)
		unmountUnder(dir)
		log.Close()
	})
	testutil.WaitFor(t, 10*time.Second, "containerd to serve", func() bool {
		_, err := e.run("version")
		return err == nil
	})
	image := filepath.Join(t.TempDir(), "image.tar")
	if err := os.WriteFile(image, ociArchive(t, ctrImage, busyboxLayer(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	e.must("images", "import", image)
	return e
}

const (
	ctrImage = "localhost/stasis-busybox:latest"
	ctrID    = "stasis-counter"
)

func (e *ctrEnv) run(args ...string) (string, error) {
	cmd := exec.Command(e.ctr, append([]string{"--address", e.sock, "--namespace", e.ns}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// must runs ctr, fails the test with its output (and criu's log) if it
// fails, and returns its output.
func (e *ctrEnv) must(args ...string) string {
	e.t.Helper()
	start := time.Now()
	out, err := e.run(args...)
	if err != nil {
		if i := strings.Index(out, "path= "); i >= 0 {
			p := strings.Fields(out[i+6:])[0]
			out += "\n" + logTail(filepath.Dir(p), strings.TrimSuffix(filepath.Base(p), ":"))
		}
		e.t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if args[0] == "containers" && (args[1] == "checkpoint" || args[1] == "restore") {
		d := time.Since(start)
		e.times.add(args[1], d)
		e.t.Logf("ctr containers %s: %v", args[1], d.Round(time.Millisecond))
	}
	return out
}

// count reads the counter from inside the container (ctr tasks exec).
func (e *ctrEnv) count() uint64 {
	e.execN++
	out, err := e.run("tasks", "exec", "--exec-id", fmt.Sprintf("count-%d", e.execN), ctrID, "cat", "/count")
	if err != nil {
		return 0
	}
	n, _ := parseCount(out)
	return n
}

// status is the task's status in `ctr tasks ls` ("" without a task).
func (e *ctrEnv) status(id string) string {
	out, _ := e.run("tasks", "ls")
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == id {
			return f[2]
		}
	}
	return ""
}

// goesOn waits for the counter to move past from and fails the test if
// it writes a value below from (it started over).
func (e *ctrEnv) goesOn(what string, from uint64) uint64 {
	e.t.Helper()
	var got uint64
	testutil.WaitFor(e.t, 20*time.Second, "the counter to go on "+what, func() bool {
		got = e.count()
		if got != 0 && got < from {
			e.t.Fatalf("%s: the counter wrote %d, checkpointed at %d or later: it started over", what, got, from)
		}
		return got > from
	})
	e.t.Logf("%s: counter %d -> %d", what, from, got)
	return got
}

func ctrCycle(t *testing.T, criu string, times runtimeTimes) {
	e := newCtrEnv(t, criu, times)
	e.must("run", "-d", "--runc-root", filepath.Join(t.TempDir(), "runc"), ctrImage, ctrID, "sh", "-c", counterScript)
	var n uint64
	testutil.WaitFor(t, 20*time.Second, "the container's counter to reach 5", func() bool { n = e.count(); return n >= 5 })

	// The task goes on after the checkpoint (containerd resumes it).
	ref := "localhost/stasis-checkpoint:1"
	before := n
	e.must("containers", "checkpoint", "--task", "--rw", ctrID, ref)
	if st := e.status(ctrID); st != "RUNNING" {
		t.Fatalf("after the checkpoint the task is %q", st)
	}
	n = e.goesOn("after the checkpoint", n)

	// A new container from the checkpoint, in place of the old one: its
	// counter goes on from the checkpoint's value (at least the one read
	// before it), not from 0.
	e.must("tasks", "kill", "--signal", "SIGKILL", ctrID)
	testutil.WaitFor(t, 10*time.Second, "the task to stop", func() bool { return e.status(ctrID) == "STOPPED" })
	e.must("tasks", "delete", ctrID)
	e.must("containers", "delete", ctrID)
	e.must("containers", "restore", "--live", "--rw", ctrID, ref)
	if st := e.status(ctrID); st != "RUNNING" {
		t.Fatalf("after the restore the task is %q", st)
	}
	e.goesOnFrom("after the restore", before)
}

// goesOnFrom is goesOn for a restored counter whose checkpointed value
// is unknown: its first value must not be below low, and it must move.
func (e *ctrEnv) goesOnFrom(what string, low uint64) {
	e.t.Helper()
	var first uint64
	testutil.WaitFor(e.t, 20*time.Second, "the restored counter", func() bool { first = e.count(); return first != 0 })
	if first < low {
		e.t.Fatalf("%s: the counter wrote %d, checkpointed at %d or later: it started over", what, first, low)
	}
	e.goesOn(what, first)
}

// TestContainerd: containerd with stasis as criu, then with CRIU 4.2.
func TestContainerd(t *testing.T) {
	testutil.RequireRoot(t)
	ref := testutil.CRIU(t)
	// The shims' sockets go to /run/containerd/s whatever the config
	// says: removed once both containerds are done, if they made it.
	hostLeftovers(t, "", "/run/containerd")
	vs := []*runtimeVariant{{name: "stasis", times: runtimeTimes{}}, {name: "criu", criu: ref, times: runtimeTimes{}}}
	// Two containerds of their own, sharing nothing: side by side.
	t.Run("flows", func(t *testing.T) {
		for _, v := range vs {
			t.Run(v.name, func(t *testing.T) {
				t.Parallel()
				ctrCycle(t, v.criu, v.times)
			})
		}
	})
	t.Logf("wall times: %s | %s", vs[0], vs[1])
}
