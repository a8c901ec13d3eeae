package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// victimCase runs one victim without any dump: the harness-side steps that
// the e2e tests do around a dump (signals to send) are done here too.
type victimCase struct {
	label  string // subtest name, default name
	name   string
	args   func(t *testing.T) []string
	before func(t *testing.T, v *testutil.Victim) // where a test would dump
	root   string                                 // why it needs root, if it does
}

func victimCases() []victimCase {
	noArgs := func(*testing.T) []string { return nil }
	return []victimCase{
		{name: "mem", args: func(*testing.T) []string { return []string{"16"} }},
		{name: "fpu", args: func(t *testing.T) []string { return []string{fpuMode(t)} }},
		{name: "signals", args: func(*testing.T) []string { return []string{strconv.Itoa(os.Getpid())} },
			before: func(t *testing.T, v *testutil.Victim) { sendPendingUSR2(t, v); sendUSR1(t, v) }},
		{name: "files", args: func(t *testing.T) []string { return []string{t.TempDir()} }},
		{name: "clock", args: noArgs},
		{name: "counter", args: func(t *testing.T) []string { return []string{filepath.Join(t.TempDir(), "count")} }},
		{label: "fdkind-io_uring", name: "fdkind", args: func(*testing.T) []string { return []string{"io_uring"} }},
		{label: "fdkind-userfaultfd", name: "fdkind", args: func(*testing.T) []string { return []string{"userfaultfd"} },
			root: "userfaultfd of kernel faults (vm.unprivileged_userfaultfd is 0)"},
		{label: "fdkind-perf_event", name: "fdkind", args: func(*testing.T) []string { return []string{"perf_event"} },
			root: "perf_event_open (kernel.perf_event_paranoid)"},
		{label: "fdkind-bpf-map", name: "fdkind", args: func(*testing.T) []string { return []string{"bpf-map"} },
			root: "bpf(BPF_MAP_CREATE) (kernel.unprivileged_bpf_disabled)"},
		{label: "fdkind-pidfd", name: "fdkind", args: func(*testing.T) []string { return []string{"pidfd"} }},
		{label: "fdkind-eventfd", name: "fdkind", args: func(*testing.T) []string { return []string{"eventfd"} }},
		{label: "fdkind-unix", name: "fdkind", args: func(*testing.T) []string { return []string{"unix"} }},
		{name: "pipe", args: noArgs},
		{name: "fifo", args: func(t *testing.T) []string { return []string{t.TempDir()} }},
		{name: "sharedfd", args: func(t *testing.T) []string { return []string{t.TempDir()} }},
		{name: "ghostnode", args: func(t *testing.T) []string { return []string{t.TempDir()} }, root: "mknod of device nodes"},
		{name: "shmem", args: func(t *testing.T) []string { return nil }},
		{name: "aio", args: func(t *testing.T) []string { return []string{t.TempDir()} }},
		{name: "shmem", label: "shmem-sysv", args: func(t *testing.T) []string { return []string{"sysv"} }},
	}
}

// TestVictimsSelfCheck runs every victim without a dump: ready, then SIGTERM
// must give exit 0. It proves the harness and the victims, not stasis.
func TestVictimsSelfCheck(t *testing.T) {
	t.Parallel()
	for _, c := range victimCases() {
		if c.label == "" {
			c.label = c.name
		}
		t.Run(c.label, func(t *testing.T) {
			if c.root != "" {
				testutil.RequireRootFor(t, c.root)
			}
			args := c.args(t)
			v := testutil.StartVictim(t, c.name, args...)
			v.WaitReady(t)
			if c.before != nil {
				c.before(t, v)
			}
			time.Sleep(50 * time.Millisecond)
			v.TermAndCheck(t)
		})
	}
}

// TestVictimsDetectLoss changes a victim's state behind its back the way a
// faulty restore could, and requires the victim to notice: a victim that
// cannot fail proves nothing.
func TestVictimsDetectLoss(t *testing.T) {
	t.Parallel()
	t.Run("mem", func(t *testing.T) {
		v := testutil.StartVictim(t, "mem", "16")
		v.WaitReady(t)
		log, _ := os.ReadFile(v.Log)
		m := regexp.MustCompile(`anonymous at (0x[0-9a-f]+)`).FindSubmatch(log)
		if m == nil {
			t.Fatalf("victim did not log its region address\n%s", log)
		}
		addr, _ := strconv.ParseUint(string(m[1]), 0, 64)
		mem, err := os.OpenFile(filepath.Join("/proc", strconv.Itoa(v.Pid), "mem"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer mem.Close()
		if _, err := mem.WriteAt([]byte("lost!"), int64(addr+5*4096+8)); err != nil {
			t.Fatal(err)
		}
		expectDetected(t, v, "FAIL: anonymous mmap region")
	})
	t.Run("fpu", func(t *testing.T) {
		v := testutil.StartVictim(t, "fpu", fpuMode(t))
		v.WaitReady(t)
		flipXMM3(t, v.Pid)
		// The loop notices by itself and exits 1, no SIGTERM needed.
		if code := v.Wait(t, 5*time.Second); code != 1 {
			t.Fatalf("exit %d, want 1\n%s", code, v.LogTail())
		}
		assertLog(t, v, "FAIL: register xmm3 changed")
	})
	t.Run("signals", func(t *testing.T) {
		v := testutil.StartVictim(t, "signals", strconv.Itoa(os.Getpid()))
		v.WaitReady(t)
		// No SIGUSR2 pending and no SIGUSR1 handled: as if both were lost.
		expectDetected(t, v, "FAIL: SIGUSR2 is not pending any more", "FAIL: SIGUSR1 handler never ran")
	})
	t.Run("files", func(t *testing.T) {
		dir := t.TempDir()
		v := testutil.StartVictim(t, "files", dir)
		v.WaitReady(t)
		f, err := os.OpenFile(filepath.Join(dir, "r.txt"), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte("XXXX"), 1500)
		f.Close()
		expectDetected(t, v, "FAIL: r.txt read through fd 100")
	})
	t.Run("pipe", func(t *testing.T) {
		v := testutil.StartVictim(t, "pipe")
		v.WaitReady(t)
		// Take one byte out of the big pipe, as a lossy refill would.
		f, err := os.OpenFile(filepath.Join("/proc", strconv.Itoa(v.Pid), "fd", "50"), os.O_RDONLY|unix.O_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		if _, err := unix.Read(int(f.Fd()), b); err != nil {
			t.Fatal(err)
		}
		f.Close()
		expectDetected(t, v, "FAIL: big pipe: 149999 bytes buffered")
	})
	t.Run("sharedfd", func(t *testing.T) {
		dir := t.TempDir()
		v := testutil.StartVictim(t, "sharedfd", dir)
		v.WaitReady(t)
		// Move the shared offset behind the victim's back.
		f, err := os.OpenFile(filepath.Join("/proc", strconv.Itoa(v.Pid), "fd", "80"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Close() // a new description: must not matter
		fd, err := unix.PidfdOpen(v.Pid, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		nfd, err := unix.PidfdGetfd(fd, 80, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.Seek(nfd, 2, 0)
		unix.Close(nfd)
		expectDetected(t, v, "FAIL: offset of fd 80 is 2, want 8")
	})
	t.Run("ghostnode", func(t *testing.T) {
		testutil.RequireRootFor(t, "mknod of device nodes")
		v := testutil.StartVictim(t, "ghostnode", t.TempDir())
		v.WaitReady(t)
		// One byte out of the unlinked FIFO, and another mode on the
		// unlinked /dev/zero node, through copies of its fds.
		fd, err := unix.PidfdOpen(v.Pid, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		rd, err := unix.PidfdGetfd(fd, 41, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.Read(rd, make([]byte, 1))
		unix.Close(rd)
		zero, err := unix.PidfdGetfd(fd, 45, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.Fchmod(zero, 0o600)
		unix.Close(zero)
		expectDetected(t, v, "FAIL: FIFO: read 2999 bytes, want 3000", "FAIL: fd 45 (zero): mode 020600")
	})
}

func expectDetected(t *testing.T, v *testutil.Victim, want ...string) {
	t.Helper()
	v.Signal(t, 15)
	if code := v.Wait(t, 10*time.Second); code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, v.LogTail())
	}
	assertLog(t, v, want...)
}

func assertLog(t *testing.T, v *testutil.Victim, want ...string) {
	t.Helper()
	log, _ := os.ReadFile(v.Log)
	for _, w := range want {
		if !bytes.Contains(log, []byte(w)) {
			t.Errorf("victim log lacks %q\n%s", w, strings.TrimSpace(string(log)))
		}
	}
}
