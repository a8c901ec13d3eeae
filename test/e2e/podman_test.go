package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// podman (Debian's, with runc: Debian's crun is built without criu)
// drives stasis installed as `criu` on $PATH, unchanged: a busybox
// container from `podman import`, `container checkpoint` and `restore`
// (--leave-running, --print-stats), `--export` and `restore --import
// --name`, that export restored by CRIU 4.2 too; then checkpointctl
// reads the export. The same with CRIU 4.2 in the same run, its export
// restored by stasis. Runs alone (no t.Parallel), as TestRunc: runc takes
// every cgroup v1 hierarchy mounted when it starts.

// podmanEnv is one podman of the test's own: storage, state, runc's
// root, locks, events, networks and cgroups in its temp dirs.
type podmanEnv struct {
	t      *testing.T
	podman string
	global []string // --root, --runroot, runc's --root
	env    []string
	cg     string // --cgroup-parent of its containers
	times  runtimeTimes
}

func newPodmanEnv(t *testing.T, criu string, times runtimeTimes) *podmanEnv {
	t.Helper()
	e := &podmanEnv{t: t, podman: testutil.RequireTool(t, "podman"), times: times}
	testutil.RequireTool(t, "runc")
	dir := t.TempDir()
	p := func(n string) string {
		d := filepath.Join(dir, n)
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		return d
	}
	root, run, tmp, runc, net := p("root"), p("runroot"), p("tmp"), p("runc"), p("net")
	storage := filepath.Join(dir, "storage.conf")
	os.WriteFile(storage, []byte(fmt.Sprintf("[storage]\ndriver = \"vfs\"\nrunroot = %q\ngraphroot = %q\n", run, root)), 0o644)
	conf := filepath.Join(dir, "containers.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = %q
runtime = "runc"
tmp_dir = %q
[network]
network_config_dir = %q
`, filepath.Join(dir, "events.log"), tmp, net)), 0o644)
	e.global = []string{"--root", root, "--runroot", run, "--runtime-flag", "root=" + runc}
	e.env = append(os.Environ(), "", "CONTAINERS_CONF="+conf, "CONTAINERS_STORAGE_CONF="+storage, "CRIU_CONFIG_FILE="+criuConf(t))
	e.useCriu(criu)
	e.cg = fmt.Sprintf("/stasis-podman-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-"))
	hostLeftovers(t, e.cg)
	t.Cleanup(func() {
		e.run("rm", "--all", "--force", "--time", "0")
		// conmon runs `podman container cleanup` as its container
		// exits: wait for them before the dirs they write go.
		waitNoProcessMentions(dir, 10*time.Second)
		unmountUnder(dir)
	})
	layer := filepath.Join(t.TempDir(), "rootfs.tar")
	if err := os.WriteFile(layer, busyboxLayer(t), 0o644); err != nil {
		t.Fatal(err)
	}
	e.must("import", layer, podmanImage)
	return e
}

const podmanImage = "localhost/stasis-busybox:latest"

// useCriu makes podman's runc find criu ("": stasis) first on $PATH.
func (e *podmanEnv) useCriu(criu string) {
	e.env[len(os.Environ())] = "PATH=" + criuDir(e.t, criu) + ":" + os.Getenv("PATH")
}

func (e *podmanEnv) run(args ...string) (string, error) {
	cmd := exec.Command(e.podman, append(append([]string{}, e.global...), args...)...)
	cmd.Env = e.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// must runs podman, fails the test with its output (and criu's log) if
// it fails, and returns its output.
func (e *podmanEnv) must(args ...string) string {
	e.t.Helper()
	start := time.Now()
	out, err := e.run(args...)
	if err != nil {
		for _, l := range strings.Split(out, "\n") {
			if i := strings.Index(l, "log file: "); i >= 0 {
				log := strings.TrimRight(l[i+10:], `"`) // the end of podman's quoted msg="..."
				out += "\n" + logTail(filepath.Dir(log), filepath.Base(log))
			}
		}
		e.t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if args[0] == "container" {
		d := time.Since(start)
		e.times.add(args[1], d)
		e.t.Logf("podman container %s: %v", args[1], d.Round(time.Millisecond))
	}
	return out
}

// count reads the counter from inside the container (podman exec).
func (e *podmanEnv) count(name string) uint64 {
	e.t.Helper()
	out, err := e.run("exec", name, "cat", "/count")
	if err != nil {
		return 0 // not written yet, or not running
	}
	n, err := parseCount(out)
	if err != nil {
		return 0
	}
	return n
}

func (e *podmanEnv) state(name string) string {
	out, err := e.run("inspect", "--format", "{{.State.Status}}", name)
	if err != nil {
		return "gone"
	}
	return strings.TrimSpace(out)
}

// goesOn waits for the counter of name to move past from, and fails the
// test if it writes a value at or below from (it started over).
func (e *podmanEnv) goesOn(name, what string, from uint64) uint64 {
	e.t.Helper()
	var got uint64
	testutil.WaitFor(e.t, 20*time.Second, "the counter to go on "+what, func() bool {
		got = e.count(name)
		if got != 0 && got < from {
			e.t.Fatalf("%s: the counter wrote %d, checkpointed at %d or later: it started over", what, got, from)
		}
		return got > from
	})
	e.t.Logf("%s: counter %d -> %d", what, from, got)
	return got
}

// criuStats is the part of podman's --print-stats output the test reads.
type criuStats struct {
	Containers []struct {
		Stats map[string]uint64 `json:"criu_statistics"`
	} `json:"container_statistics"`
}

// printedStats checks that podman printed criu's statistics for one
// container, with the fields want non-zero.
func (e *podmanEnv) printedStats(out string, want ...string) {
	e.t.Helper()
	var st criuStats
	i := strings.Index(out, "{")
	if i < 0 || json.Unmarshal([]byte(out[i:]), &st) != nil || len(st.Containers) != 1 {
		e.t.Fatalf("--print-stats: no statistics in\n%s", out)
	}
	for _, f := range want {
		if st.Containers[0].Stats[f] == 0 {
			e.t.Errorf("--print-stats: criu_statistics.%s is 0 or missing: %v", f, st.Containers[0].Stats)
		}
	}
}

// podmanCycle runs the flow and returns the path of the export, made in
// dir; then restores the export once more with other (stasis for "")
// as criu: what one made, the other restores.
func podmanCycle(t *testing.T, criu, other, dir string, times runtimeTimes) string {
	e := newPodmanEnv(t, criu, times)
	name := fmt.Sprintf("stasis-podman-%d", os.Getpid())
	// No CAP_SYS_RESOURCE here: podman's default rlimits would need it.
	e.must("run", "-d", "--name", name, "--network", "none", "--cgroup-parent", e.cg,
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", podmanImage, "sh", "-c", counterScript)
	var n uint64
	testutil.WaitFor(t, 20*time.Second, "the container's counter to reach 5", func() bool { n = e.count(name); return n >= 5 })

	out := e.must("container", "checkpoint", "--leave-running", "--print-stats", name)
	e.printedStats(out, "freezing_time", "frozen_time", "pages_written")
	if st := e.state(name); st != "running" {
		t.Fatalf("after checkpoint --leave-running the container is %q", st)
	}
	n = e.goesOn(name, "after checkpoint --leave-running", n)

	// Checkpoint into podman's own directory (the one --leave-running
	// used), restore from it. stasis pre-dumps first (--pre-checkpoint,
	// then --with-previous: the pages not written since stay in the
	// pre-dump); criu 4.2 cannot here ("CRIU is missing features": its
	// memory tracking needs soft-dirty, which this kernel lacks).
	if criu == "" {
		e.must("container", "checkpoint", "--pre-checkpoint", name)
		n = e.goesOn(name, "after checkpoint --pre-checkpoint", n)
		out = e.must("container", "checkpoint", "--with-previous", "--print-stats", name)
		e.printedStats(out, "pages_written")
	} else {
		e.must("container", "checkpoint", name)
	}
	if st := e.state(name); st == "running" {
		t.Fatal("after checkpoint the container is still running")
	}
	out = e.must("container", "restore", "--print-stats", name)
	e.printedStats(out, "restore_time", "pages_restored")
	n = e.goesOn(name, "after restore", n)

	// Export, and restore the export as a new container beside the
	// stopped one.
	export := filepath.Join(dir, "checkpoint.tar.gz")
	e.must("container", "checkpoint", "--export", export, "--compress", "gzip", name)
	copyName := name + "-copy"
	e.must("container", "restore", "--import", export, "--name", copyName)
	e.goesOn(copyName, "in the container restored from the export", n)
	if st := e.state(name); st == "running" {
		t.Errorf("the exported container is %q, the copy runs beside it", st)
	}
	e.useCriu(other)
	e.times = runtimeTimes{} // the figures are the criu's own flow's
	e.run("stop", "--time", "0", copyName)
	e.must("container", "restore", "--import", export, "--name", name+"-cross")
	e.goesOn(name+"-cross", "in the container restored from the export by the other criu", n)
	return export
}

// TestPodman: podman with stasis as criu, then with CRIU 4.2; then
// checkpointctl and the stats images on both exports.
func TestPodman(t *testing.T) {
	testutil.RequireRoot(t)
	ref := testutil.CRIU(t)
	// Podman 4.3 keeps its lock in /dev/shm whatever its config says,
	// and `import` its blob cache in /var/lib/containers: removed once
	// both podmans are done, if they made them.
	hostLeftovers(t, "", "/dev/shm/libpod_lock", "/var/lib/containers")
	vs := []*runtimeVariant{{name: "stasis", other: ref, times: runtimeTimes{}}, {name: "criu", criu: ref, times: runtimeTimes{}}}
	// The two podmans share nothing but the lock above (contention only):
	// side by side.
	dirs := []string{t.TempDir(), t.TempDir()} // the exports, read after the flows
	t.Run("flows", func(t *testing.T) {
		for i, v := range vs {
			dir := dirs[i]
			t.Run(v.name, func(t *testing.T) {
				t.Parallel()
				v.export = podmanCycle(t, v.criu, v.other, dir, v.times)
			})
		}
	})
	t.Logf("wall times: %s | %s", vs[0], vs[1])
	if vs[0].export == "" || vs[1].export == "" {
		return
	}
	t.Run("stats", func(t *testing.T) { compareExportStats(t, vs[0].export, vs[1].export) })
	t.Run("checkpointctl", func(t *testing.T) { checkpointctlCompare(t, vs[0].export, vs[1].export) })
}
