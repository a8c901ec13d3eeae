package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// runc drives stasis installed as `criu` on $PATH (stasis
// install-as-criu), unchanged: run -d, checkpoint --leave-running,
// checkpoint, restore -d, on a busybox container whose shell counts in
// memory into /count; and the same with CRIU 4.2 as criu, in the same
// run. The test runs alone (no t.Parallel): runc takes every cgroup v1
// hierarchy mounted when it starts, and cgroup tests mount some.

// runcEnv is one runc setup: its state dir, the criu it finds on $PATH.
type runcEnv struct {
	t      *testing.T
	runc   string
	root   string // runc --root
	bundle string
	path   string // $PATH with criu first
	conf   string // $CRIU_CONFIG_FILE
	held   []*os.File
}

// newRuncEnv builds the bundle: rootfs with a static busybox, config.json
// from `runc spec` running the counter, no terminal.
func newRuncEnv(t *testing.T, criu string) *runcEnv {
	t.Helper()
	e := &runcEnv{t: t, runc: testutil.RequireTool(t, "runc"), root: t.TempDir(), bundle: t.TempDir()}
	bb := testutil.RequireTool(t, "busybox")
	rootfs := filepath.Join(e.bundle, "rootfs")
	if err := os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"sh", "sleep"} {
		os.Symlink("busybox", filepath.Join(rootfs, "bin", c))
	}
	if out, err := exec.Command(e.runc, "spec", "--bundle", e.bundle).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v\n%s", err, out)
	}
	cfgPath := filepath.Join(e.bundle, "config.json")
	var cfg map[string]any
	b, _ = os.ReadFile(cfgPath)
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	proc := cfg["process"].(map[string]any)
	proc["terminal"] = false
	proc["args"] = []string{"sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /count; sleep 0.05; done"}
	cfg["root"].(map[string]any)["readonly"] = false
	if b, err = json.MarshalIndent(cfg, "", " "); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	if criu == "" {
		// stasis as criu, the way a user installs it.
		r := testutil.Run(t, 10*time.Second, "install-as-criu", bin)
		if r.Code != 0 {
			t.Fatalf("install-as-criu: %s", r)
		}
	} else if err := os.Symlink(criu, filepath.Join(bin, "criu")); err != nil {
		t.Fatal(err)
	}
	e.path = bin + ":" + os.Getenv("PATH")
	// criu's default network lock, iptables, has no binary here; stasis
	// takes nftables by default and reads the file the same way.
	e.conf = filepath.Join(t.TempDir(), "criu.conf")
	os.WriteFile(e.conf, []byte("network-lock nftables\n"), 0o644)
	return e
}

// run runs runc with args; the container's stdio are pipes the test
// holds, as a runtime's (runc records them in descriptors.json and gives
// them back at restore with inherit_fd).
func (e *runcEnv) run(args ...string) (string, error) {
	e.t.Helper()
	cmd := exec.Command(e.runc, append([]string{"--root", e.root}, args...)...)
	cmd.Dir = e.bundle
	cmd.Env = append(os.Environ(), "PATH="+e.path, "CRIU_CONFIG_FILE="+e.conf)
	var files [3]*os.File
	for i := range files {
		r, w, err := os.Pipe()
		if err != nil {
			e.t.Fatal(err)
		}
		if i == 0 {
			files[i] = r
			e.held = append(e.held, w)
		} else {
			files[i] = w
			e.held = append(e.held, r)
		}
	}
	cmd.Stdin, cmd.Stdout = files[0], files[1]
	var stderr strings.Builder
	errR, errW, _ := os.Pipe()
	cmd.Stderr = errW
	done := make(chan struct{})
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := errR.Read(b)
			stderr.Write(b[:n])
			if err != nil {
				close(done)
				return
			}
		}
	}()
	err := cmd.Run()
	errW.Close()
	// The container keeps its stderr (a copy of errW): read what runc
	// wrote, without waiting for an EOF that never comes.
	select {
	case <-done:
	case <-time.After(200 * time.Millisecond):
	}
	for _, f := range files {
		f.Close()
	}
	e.held = append(e.held, errR)
	return stderr.String(), err
}

func (e *runcEnv) must(args ...string) {
	e.t.Helper()
	start := time.Now()
	if out, err := e.run(args...); err != nil {
		for i, a := range args {
			if a == "--image-path" && i+1 < len(args) {
				out += "\n" + logTail(args[i+1], args[0]+".log")
				if args[0] == "checkpoint" {
					out += "\n" + logTail(args[i+1], "dump.log")
				}
			}
		}
		e.t.Fatalf("runc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	e.t.Logf("runc %s: %v", args[0], time.Since(start).Round(time.Millisecond))
}

// count reads the container's counter (0 while it has not written yet).
func (e *runcEnv) count() uint64 {
	b, _ := os.ReadFile(filepath.Join(e.bundle, "rootfs", "count"))
	n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return n
}

func (e *runcEnv) status(id string) string {
	cmd := exec.Command(e.runc, "--root", e.root, "state", id)
	out, err := cmd.Output()
	if err != nil {
		return "gone"
	}
	var st struct{ Status string }
	json.Unmarshal(out, &st)
	return st.Status
}

func (e *runcEnv) close(id string) {
	exec.Command(e.runc, "--root", e.root, "kill", id, "KILL").Run()
	time.Sleep(100 * time.Millisecond)
	exec.Command(e.runc, "--root", e.root, "delete", "-f", id).Run()
	for _, f := range e.held {
		f.Close()
	}
}

// runcCycle: run -d, checkpoint --leave-running (the counter goes on),
// checkpoint (the container stops), restore -d: the counter goes on from
// where it was, restored twice (a second checkpoint and restore).
func runcCycle(t *testing.T, criu string) {
	e := newRuncEnv(t, criu)
	id := fmt.Sprintf("stasis-rpc-%d", os.Getpid())
	t.Cleanup(func() { e.close(id) })
	e.must("run", "-d", id)
	testutil.WaitFor(t, 10*time.Second, "the container's counter to reach 10", func() bool { return e.count() >= 10 })

	e.must("checkpoint", "--leave-running", "--image-path", t.TempDir(), id)
	if st := e.status(id); st != "running" {
		t.Fatalf("after checkpoint --leave-running the container is %q", st)
	}
	n := e.count()
	testutil.WaitFor(t, 5*time.Second, "the counter to go on after --leave-running", func() bool { return e.count() > n+3 })

	for cycle := 1; cycle <= 2; cycle++ {
		img := t.TempDir()
		e.must("checkpoint", "--image-path", img, id)
		if st := e.status(id); st == "running" {
			t.Fatalf("cycle %d: after checkpoint the container is still running", cycle)
		}
		// /count stays as dumped (the shell may hold it open, and a
		// restore checks an open file's size): a counter that started
		// over would write values below from.
		from := e.count()
		e.must("restore", "-d", "--image-path", img, id)
		if st := e.status(id); st != "running" {
			t.Fatalf("cycle %d: after restore the container is %q", cycle, st)
		}
		var got uint64
		testutil.WaitFor(t, 5*time.Second, "the restored counter to go on", func() bool {
			got = e.count()
			if got != 0 && got <= from {
				t.Fatalf("cycle %d: the restored counter wrote %d, checkpointed at %d: it started over", cycle, got, from)
			}
			return got > from
		})
		t.Logf("cycle %d: counter %d -> %d", cycle, from, got)
	}
}

// TestRunc: runc with stasis as criu, then with CRIU 4.2 (runc from
// apt, .ci/run; the restored init is runc's child, rst_sibling).
func TestRunc(t *testing.T) {
	testutil.RequireRoot(t)
	ref := testutil.CRIU(t)
	t.Run("stasis", func(t *testing.T) { runcCycle(t, "") })
	t.Run("criu", func(t *testing.T) { runcCycle(t, ref) })
}
