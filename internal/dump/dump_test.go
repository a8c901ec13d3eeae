package dump

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/testutil"
	"github.com/stasis-cr/stasis/internal/testutil/require"
)

func TestIDAlloc(t *testing.T) {
	var a idAlloc // nil: the first next makes the map
	for i, want := range []int{1, 2, 3} {
		if got := a.next("pages"); got != want {
			t.Errorf("next pages #%d = %d, want %d", i, got, want)
		}
	}
	if got := a.next("vm"); got != 1 {
		t.Errorf("next vm = %d, want 1: each kind is numbered on its own", got)
	}
	// A dumper's first process gets id 2 of the kinds of inventory's
	// root_ids, which are stasis' own objects (id 1).
	d := &dumper{ids: idAlloc{"vm": rootObjID, "files": rootObjID, "fs": rootObjID, "sighand": rootObjID}}
	for _, kind := range []string{"vm", "files", "fs", "sighand"} {
		if got := d.ids.next(kind); got != rootObjID+1 {
			t.Errorf("first %s id of a process = %d, want %d", kind, got, rootObjID+1)
		}
	}
	if got := d.ids.next("pages"); got != 1 {
		t.Errorf("first pages id = %d, want 1", got)
	}
}

func TestImageNames(t *testing.T) {
	for id, want := range map[int]string{1: "pages-1.img", 12: "pages-12.img"} {
		if got := pagesName(id); got != want {
			t.Errorf("pagesName(%d) = %q, want %q", id, got, want)
		}
	}
	ids := objIDs(rootObjID)
	for name, v := range map[string]uint32{"vm": ids.GetVmId(), "files": ids.GetFilesId(), "fs": ids.GetFsId(),
		"sighand": ids.GetSighandId(), "pid ns": ids.GetPidNsId(), "net ns": ids.GetNetNsId(), "mnt ns": ids.GetMntNsId(),
		"user ns": ids.GetUserNsId(), "time ns": ids.GetTimeNsId()} {
		if v != rootObjID {
			t.Errorf("objIDs(%d): %s id %d", rootObjID, name, v)
		}
	}
}

func TestInventory(t *testing.T) {
	d := newDumper(context.Background(), Options{Pid: 42}, false)
	a := d.inventory()
	if a.GetImgVersion() != ImgVersion || !a.GetFdinfoPerId() || !a.GetNsPerId() || a.GetRootIds().GetVmId() != rootObjID {
		t.Errorf("inventory %v", a)
	}
	// The run id names the network lock as criu names its own, after
	// the dump: stasis-PID-RANDOM, another one for every dump.
	id := a.GetDumpCriuRunId()
	if rest, ok := strings.CutPrefix(id, "stasis-42-"); !ok || len(rest) != 16 || strings.Trim(rest, "0123456789abcdef") != "" {
		t.Errorf("dump_criu_run_id %q, want stasis-42- and 16 hex digits", id)
	}
	if b := newDumper(context.Background(), Options{Pid: 42}, false).inventory(); id == b.GetDumpCriuRunId() {
		t.Errorf("two dumps have the same run id %q", id)
	}
	if a.GetNetworkLockMethod() != 1 {
		t.Errorf("network_lock_method %d, want 1 (nftables, criu's enum)", a.GetNetworkLockMethod())
	}
}

// freePID is a pid no task holds, from the top of the pid range.
func freePID(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	max, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	for pid := max - 1; pid > max-1000; pid-- {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, os.ErrNotExist) {
			return pid
		}
	}
	t.Fatal("no free pid at the top of the range")
	return 0
}

// TestCheckTarget: the pids that must not be dumped are refused, with the
// pid and the reason, before any task is touched.
func TestCheckTarget(t *testing.T) {
	check := func(pid int) error { return (&dumper{opts: Options{Pid: pid}}).checkTarget() }
	for _, pid := range []int{0, -1} {
		if err := check(pid); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("invalid pid %d", pid)) {
			t.Errorf("checkTarget(%d) = %v, want invalid pid", pid, err)
		}
	}
	if err := check(os.Getpid()); !errors.Is(err, ErrSelf) || !strings.Contains(err.Error(), strconv.Itoa(os.Getpid())) {
		t.Errorf("checkTarget(self) = %v, want ErrSelf naming the pid", err)
	}
	free := freePID(t)
	if err := check(free); !errors.Is(err, ErrNoProcess) || !strings.Contains(err.Error(), strconv.Itoa(free)) {
		t.Errorf("checkTarget(%d, free) = %v, want ErrNoProcess naming the pid", free, err)
	}

	t.Run("kernel-thread", func(t *testing.T) {
		st, err := proc.ReadStat(2)
		if err != nil || st.Flags&pfKthread == 0 {
			require.SkipOrFail(t, "pid 2 is not a kernel thread here (a pid namespace without kthreadd): %v", err)
		}
		if err := check(2); !errors.Is(err, ErrKernelThread) || !strings.Contains(err.Error(), "pid 2 ("+st.Comm+")") {
			t.Errorf("checkTarget(2) = %v, want ErrKernelThread naming pid 2 (%s)", err, st.Comm)
		}
	})

	t.Run("zombie", func(t *testing.T) {
		cmd := exec.Command(require.Tool(t, "sh"), "-c", "exit 0")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Wait()
		pid := cmd.Process.Pid
		deadline := time.Now().Add(10 * time.Second)
		for {
			st, err := proc.ReadStat(pid)
			if err == nil && st.State == 'Z' {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pid %d is not a zombie after 10s: %+v, %v", pid, st, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err := check(pid); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("dump pid %d (sh): is a zombie", pid)) {
			t.Errorf("checkTarget(zombie %d) = %v", pid, err)
		}
	})
}

// TestDumpRefusesUpFront: options and targets that are refused create no
// images dir.
func TestDumpRefusesUpFront(t *testing.T) {
	for _, c := range []struct {
		name string
		opts Options
		want string
	}{
		{"pid-0", Options{Pid: 0}, "invalid pid 0"},
		{"self", Options{Pid: os.Getpid()}, ErrSelf.Error()},
		{"ghost-limit", Options{Pid: os.Getpid(), Files: files.DumpOptions{GhostLimit: -1}}, "--ghost-limit -1"},
		{"external", Options{Pid: os.Getpid(), Files: files.DumpOptions{External: []string{"bogus[1]:y"}}}, "--external bogus[1]:y"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.opts.ImagesDir = filepath.Join(t.TempDir(), "images")
			err := Dump(context.Background(), c.opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Dump(%+v) = %v, want an error with %q", c.opts, err, c.want)
			}
			if _, serr := os.Stat(c.opts.ImagesDir); !errors.Is(serr, os.ErrNotExist) {
				t.Errorf("the refused dump made %s (%v)", c.opts.ImagesDir, serr)
			}
		})
	}
}

func readStats(t *testing.T, dir string) *stats.DumpStatsEntry {
	t.Helper()
	d, err := images.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var e stats.StatsEntry
	if err := d.ReadOne("stats-dump", &e); err != nil {
		t.Fatal(err)
	}
	return e.GetDump()
}

// startDetached starts a program that is not a child of the test process
// (a dump's tracer must not be its parent, whose wait would take the
// ptrace stops), in a session of its own; the test kills it when it ends.
func startDetached(t *testing.T, prog string, args ...string) int {
	t.Helper()
	// An fd the test binary inherited (a runner's pipe) would be in the
	// program too, and refused by the dump as shared outside the tree.
	if err := testutil.CloseInheritedFDs(); err != nil {
		t.Fatal(err)
	}
	sh := require.Tool(t, "sh")
	setsid := require.Tool(t, "setsid")
	out, err := exec.Command(sh, append([]string{"-c", `"$0" "$@" </dev/null >/dev/null 2>&1 & echo $!`, setsid, prog}, args...)...).Output()
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("pid %q: %v", out, err)
	}
	comm := filepath.Base(prog)
	if comm == "unshare" {
		comm = args[len(args)-2]
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if st, err := proc.ReadStat(pid); err == nil && st.Comm == comm && st.Session == pid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d does not run %s in its own session", pid, comm)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Cleanup(func() {
		if st, err := proc.ReadStat(pid); err == nil && st.Comm == comm {
			unix.Kill(pid, unix.SIGKILL)
		}
	})
	return pid
}

// untouched fails unless pid runs, not stopped nor traced, with the
// signal mask it had.
func untouched(t *testing.T, pid int, sigBlk string) {
	t.Helper()
	st, err := proc.ReadStatus(pid)
	if err != nil {
		t.Fatalf("pid %d: %v", pid, err)
	}
	s, err := proc.ReadStat(pid)
	if err != nil {
		t.Fatalf("pid %d: %v", pid, err)
	}
	if st.TracerPid != 0 || strings.ContainsRune("TtZX", rune(s.State)) {
		t.Errorf("pid %d is %c with tracer %d after the dump", pid, s.State, st.TracerPid)
	}
	if got := sigBlkOf(t, pid); got != sigBlk {
		t.Errorf("pid %d SigBlk %s, was %s", pid, got, sigBlk)
	}
}

func sigBlkOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "SigBlk:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no SigBlk in /proc/%d/status", pid)
	return ""
}

// TestDumpSleep dumps a sleep: with LeaveRunning it goes on untouched and
// the images hold its one process; without, it is killed.
func TestDumpSleep(t *testing.T) {
	require.RootFor(t, "ptrace of another process")
	pid := startDetached(t, require.Tool(t, "sleep"), "1000")
	blk := sigBlkOf(t, pid)

	dir := filepath.Join(t.TempDir(), "images")
	if err := Dump(context.Background(), Options{Pid: pid, ImagesDir: dir, LeaveRunning: true}); err != nil {
		t.Fatalf("dump -R of sleep %d: %v", pid, err)
	}
	untouched(t, pid, blk)
	d, err := images.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"inventory.img", "pstree.img", fmt.Sprintf("core-%d.img", pid), fmt.Sprintf("mm-%d.img", pid),
		fmt.Sprintf("pagemap-%d.img", pid), "pages-1.img", "stats-dump"} {
		if !d.Has(name) {
			t.Errorf("the dump has no %s", name)
		}
	}
	if e := readStats(t, dir); e.GetPagesWritten() == 0 || e.GetPagesScanned() < e.GetPagesWritten() || e.GetFrozenTime() == 0 {
		t.Errorf("stats-dump %v", e)
	}

	if err := Dump(context.Background(), Options{Pid: pid, ImagesDir: filepath.Join(t.TempDir(), "images")}); err != nil {
		t.Fatalf("dump of sleep %d: %v", pid, err)
	}
	if st, err := proc.ReadStat(pid); err == nil && st.State != 'Z' && st.State != 'X' {
		t.Errorf("the dumped sleep %d is still %c", pid, st.State)
	}
}

// TestDumpFailureLeavesRunning: a dump that fails once the process is
// seized (its images dir is a one-page tmpfs: the pages do not fit) leaves
// it running untouched, and says why.
func TestDumpFailureLeavesRunning(t *testing.T) {
	require.RootFor(t, "ptrace of another process, mount")
	pid := startDetached(t, require.Tool(t, "sleep"), "1000")
	blk := sigBlkOf(t, pid)
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=4k"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	err := Dump(context.Background(), Options{Pid: pid, ImagesDir: filepath.Join(mnt, "images")})
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("dump of sleep %d into a full tmpfs: %v, want ENOSPC", pid, err)
	}
	t.Logf("failed as expected: %v", err)
	untouched(t, pid, blk)
}
