package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// LXC (Debian's lxc 5.0.2) drives the criu it finds on $PATH, unchanged:
// lxc-checkpoint -s (dump, the container stops), lxc-checkpoint -r
// (restore, LXC's monitor adopts the restored init). The container is
// made offline by the busybox template (busybox-static), in an lxcpath
// of the test's own; its init is a shell counting into /count. The test
// runs alone (no t.Parallel): LXC takes every cgroup v1 hierarchy, as
// runc does (runc_test.go).

// lxcEnv is one container and the criu LXC runs.
type lxcEnv struct {
	t    *testing.T
	path string // lxcpath (-P)
	name string
	env  []string // $PATH with criu first, $CRIU_CONFIG_FILE
}

// lxcTemplateBinds are the binds of the busybox template that Debian
// cannot honour: /lib and /lib64 are symlinks into /usr there, and the
// container needs no library (busybox is static).
var lxcTemplateBinds = regexp.MustCompile(`(?m)^lxc\.mount\.entry = /(usr/)?lib(64)? .*\n|^lxc\.mount\.entry = /sys/kernel/security .*\n`)

// lxcConfigDrops are the template's settings the test replaces: its
// network (a veth to lxcbr0, which nothing here creates), its AppArmor
// profile (no AppArmor here: LXC would pass --lsm-profile, which criu
// refuses without AppArmor), and its consoles (ttys and /dev/console,
// ptys whose master is LXC's, outside the dumped tree).
var lxcConfigDrops = regexp.MustCompile(`(?m)^lxc\.(net\.0\.\w+|apparmor\.\w+|tty\.max|console\.path) = .*\n`)

// lxcBase is a container made once by the busybox template, in an
// lxcpath of its own, with the test's config: each lxcEnv copies it
// (lxc-create runs ln once per busybox applet, seconds under load).
type lxcBase struct {
	path, name string
}

func newLXCBase(t *testing.T) *lxcBase {
	t.Helper()
	create := testutil.RequireTool(t, "lxc-create")
	for _, tool := range []string{"lxc-start", "lxc-checkpoint", "lxc-stop", "lxc-destroy", "lxc-info"} {
		testutil.RequireTool(t, tool)
	}
	testutil.RequireTool(t, "busybox")
	b := &lxcBase{path: t.TempDir(), name: "base"}
	start := time.Now()
	if out, err := exec.Command(create, "-P", b.path, "-n", b.name, "-t", "busybox").CombinedOutput(); err != nil {
		t.Fatalf("lxc-create -t busybox: %v\n%s", err, out)
	}
	cfgPath := filepath.Join(b.path, b.name, "config")
	c, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := lxcConfigDrops.ReplaceAllString(lxcTemplateBinds.ReplaceAllString(string(c), ""), "")
	cfg = lxcPerContainer.ReplaceAllString(cfg, "")
	cfg += "lxc.net.0.type = empty\nlxc.tty.max = 0\nlxc.console.path = none\nlxc.init.cmd = /bin/sh /counter.sh\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	counter := "i=0\nwhile true; do i=$((i+1)); echo $i > /count; sleep 0.05; done\n"
	if err := os.WriteFile(filepath.Join(b.path, b.name, "rootfs", "counter.sh"), []byte(counter), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("lxc-create: %v", time.Since(start).Round(time.Millisecond))
	return b
}

// lxcPerContainer are the lines of the config that name the container
// and its rootfs: each copy writes its own.
var lxcPerContainer = regexp.MustCompile(`(?m)^lxc\.(rootfs\.path|uts\.name) = .*\n`)

// newLXCEnv copies base to a container of its own, driven with criu
// (stasis installed as criu if "").
func newLXCEnv(t *testing.T, base *lxcBase, criu string) *lxcEnv {
	t.Helper()
	e := &lxcEnv{t: t, path: t.TempDir(), name: fmt.Sprintf("stasis-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)}
	bin := t.TempDir()
	if criu == "" {
		if r := testutil.Run(t, 10*time.Second, "install-as-criu", bin); r.Code != 0 {
			t.Fatalf("install-as-criu: %s", r)
		}
	} else if err := os.Symlink(criu, filepath.Join(bin, "criu")); err != nil {
		t.Fatal(err)
	}
	// criu's default network lock, iptables, has no binary here.
	conf := filepath.Join(t.TempDir(), "criu.conf")
	if err := os.WriteFile(conf, []byte("network-lock nftables\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "CRIU_CONFIG_FILE="+conf)
	dir := filepath.Join(e.path, e.name)
	if out, err := exec.Command("cp", "-a", filepath.Join(base.path, base.name), dir).CombinedOutput(); err != nil {
		t.Fatalf("copy the base container: %v\n%s", err, out)
	}
	t.Cleanup(e.destroy)
	cfgPath := filepath.Join(dir, "config")
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b) + fmt.Sprintf("lxc.rootfs.path = dir:%s\nlxc.uts.name = %s\n", e.rootfs(), e.name)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *lxcEnv) rootfs() string { return filepath.Join(e.path, e.name, "rootfs") }

// lxc runs an lxc-* tool on the container, logging to LOG.log in the
// lxcpath at DEBUG; on failure the test fails with that log and criu's.
func (e *lxcEnv) lxc(tool string, args ...string) time.Duration {
	e.t.Helper()
	log := filepath.Join(e.path, tool+".log")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, append([]string{"-P", e.path, "-n", e.name, "-l", "DEBUG", "-o", log}, args...)...)
	cmd.Env = e.env
	// A file, not a pipe: the monitor lxc-start and lxc-checkpoint -r
	// leave behind keeps their stdout and stderr, a pipe would never end.
	outf, err := os.CreateTemp(e.path, tool+"-out-")
	if err != nil {
		e.t.Fatal(err)
	}
	defer outf.Close()
	cmd.Stdout, cmd.Stderr = outf, outf
	start := time.Now()
	err = cmd.Run()
	took := time.Since(start)
	out, _ := os.ReadFile(outf.Name())
	if err != nil {
		msg := fmt.Sprintf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out)
		if b, rerr := os.ReadFile(log); rerr == nil {
			msg += "\n" + lxcLogErrors(string(b))
		}
		for i, a := range args {
			if a == "-D" && i+1 < len(args) {
				msg += "\n" + logTail(args[i+1], "dump.log") + "\n" + logTail(args[i+1], "restore.log")
			}
		}
		e.t.Fatal(msg)
	}
	return took
}

// lxcLogErrors keeps the ERROR and WARN lines of an LXC log.
func lxcLogErrors(log string) string {
	var keep []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, " ERROR ") || strings.Contains(l, "init process") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func (e *lxcEnv) state() string {
	out, _ := exec.Command("lxc-info", "-P", e.path, "-n", e.name, "-sH").Output()
	return strings.TrimSpace(string(out))
}

func (e *lxcEnv) count() uint64 {
	b, _ := os.ReadFile(filepath.Join(e.rootfs(), "count"))
	n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return n
}

func (e *lxcEnv) destroy() {
	exec.Command("lxc-stop", "-P", e.path, "-n", e.name, "-k").Run()
	if out, err := exec.Command("lxc-destroy", "-P", e.path, "-n", e.name, "-f").CombinedOutput(); err != nil {
		e.t.Logf("lxc-destroy %s: %v\n%s", e.name, err, out)
	}
	// LXC leaves the container's emptied cgroups behind (lxc.payload.NAME,
	// lxc.monitor.NAME in each hierarchy): remove them, deepest first.
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/lxc.*." + e.name + "*")
	more, _ := filepath.Glob("/sys/fs/cgroup/lxc.*." + e.name + "*")
	for _, d := range append(dirs, more...) {
		removeCgroupTree(d)
	}
}

// removeCgroupTree removes an empty cgroup and its children.
func removeCgroupTree(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, en := range entries {
		if en.IsDir() {
			removeCgroupTree(filepath.Join(dir, en.Name()))
		}
	}
	os.Remove(dir)
}

// lxcCycle: start, checkpoint -s, restore; the counter goes on from where
// it was, written by the restored shell.
func lxcCycle(t *testing.T, base *lxcBase, criu string) {
	e := newLXCEnv(t, base, criu)
	e.lxc("lxc-start")
	testutil.WaitFor(t, 10*time.Second, "the container's counter to reach 10", func() bool { return e.count() >= 10 })
	img := filepath.Join(t.TempDir(), "images") // lxc-checkpoint wants a fresh directory
	dump := e.lxc("lxc-checkpoint", "-s", "-D", img)
	if st := e.state(); st != "STOPPED" {
		t.Fatalf("after lxc-checkpoint -s the container is %s", st)
	}
	// The file is left as the checkpoint found it: the shell may have
	// been frozen mid-redirection with /count open and truncated, and
	// both criu and stasis refuse to restore an open file whose size
	// changed. A restarted counter shows as a value below from (0 is an
	// empty file, between a truncation and its write).
	from := e.count()
	restore := e.lxc("lxc-checkpoint", "-r", "-D", img)
	var got uint64
	testutil.WaitFor(t, 10*time.Second, "the restored counter to go on", func() bool {
		got = e.count()
		if got <= from && e.state() == "STOPPED" {
			b, _ := os.ReadFile(filepath.Join(e.path, "lxc-checkpoint.log"))
			t.Fatalf("after lxc-checkpoint -r the container stopped (counter %d, checkpointed at %d):\n%s", got, from, lxcLogErrors(string(b)))
		}
		if got != 0 && got < from {
			t.Fatalf("the restored counter wrote %d, checkpointed at %d: it started over", got, from)
		}
		return got > from
	})
	if st := e.state(); st != "RUNNING" {
		t.Fatalf("after lxc-checkpoint -r the container is %s", st)
	}
	t.Logf("lxc-checkpoint -s %v, -r %v; counter %d -> %d", dump.Round(time.Millisecond), restore.Round(time.Millisecond), from, got)
}

// TestLXC: LXC with CRIU 4.2 as criu (the reference), then with stasis.
// LXC takes the first pid of its /proc/self/task/TID/children, once it
// has reaped the criu it started, for the container's init: stasis, as
// criu, must leave it no other child than the root (puppet/split.go).
func TestLXC(t *testing.T) {
	testutil.RequireRoot(t)
	ref := testutil.CRIU(t)
	base := newLXCBase(t)
	t.Run("criu", func(t *testing.T) { lxcCycle(t, base, ref) })
	t.Run("stasis", func(t *testing.T) { lxcCycle(t, base, "") })
}
