package core

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/ptrace"
	"github.com/stasis-cr/stasis/internal/remote"
	"github.com/stasis-cr/stasis/internal/testutil"
)

// buildVictim compiles testdata/victim.c for one test.
func buildVictim(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "victim")
	out, err := exec.Command("gcc", "-O1", "-g", "-Wall", "-o", bin, "testdata/victim.c").CombinedOutput()
	if err != nil {
		t.Fatalf("gcc testdata/victim.c: %v\n%s", err, out)
	}
	return bin
}

// victim is one run of testdata/victim.c, talked to over pipes. It is not
// waited for while the test traces it: a wait from any thread of the
// tracer's process could take the ptrace stops.
type victim struct {
	pid   int
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Reader
	ready string // the rest of the "ready" line
	ended bool
}

func startVictim(t *testing.T, mode string) *victim {
	t.Helper()
	testutil.RequireRoot(t)
	cmd := exec.Command(buildVictim(t), mode)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	v := &victim{pid: cmd.Process.Pid, cmd: cmd, in: in, out: bufio.NewReader(outPipe)}
	t.Cleanup(func() {
		if !v.ended {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	line := v.line(t)
	rest, ok := strings.CutPrefix(line, "ready")
	if !ok {
		t.Fatalf("victim %s (pid %d): %q instead of ready", mode, v.pid, line)
	}
	v.ready = strings.TrimSpace(rest)
	return v
}

// line reads one answer, with a deadline so that a dead or stuck victim
// fails the test instead of hanging it.
func (v *victim) line(t *testing.T) string {
	t.Helper()
	type res struct {
		s   string
		err error
	}
	c := make(chan res, 1)
	go func() {
		s, err := v.out.ReadString('\n')
		c <- res{s, err}
	}()
	select {
	case r := <-c:
		if r.err != nil {
			t.Fatalf("victim %d: read: %v (got %q)", v.pid, r.err, r.s)
		}
		return strings.TrimSuffix(r.s, "\n")
	case <-time.After(10 * time.Second):
		t.Fatalf("victim %d: no answer", v.pid)
	}
	return ""
}

// ask sends a one-byte command and returns the answer line.
func (v *victim) ask(t *testing.T, c byte) string {
	t.Helper()
	if _, err := v.in.Write([]byte{c}); err != nil {
		t.Fatalf("victim %d: write %q: %v", v.pid, c, err)
	}
	return v.line(t)
}

// wait sends c (if not 0) and waits for the victim to end.
func (v *victim) wait(t *testing.T, c byte) syscall.WaitStatus {
	t.Helper()
	if c != 0 {
		if _, err := v.in.Write([]byte{c}); err != nil {
			t.Fatalf("victim %d: write %q: %v", v.pid, c, err)
		}
	}
	done := make(chan struct{})
	go func() {
		_ = v.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("victim %d did not end", v.pid)
	}
	v.ended = true
	return v.cmd.ProcessState.Sys().(syscall.WaitStatus)
}

// held is a victim seized and stopped, with seccomp suspended and every
// signal blocked (as the dump and restore do), and a scratch mapping for
// pointer arguments.
type held struct {
	t    *ptrace.Task
	s    *ptrace.Scratch
	mask uint64
}

func hold(pid int) (*held, error) {
	t, _, err := ptrace.SeizeAndStop(pid)
	if err != nil {
		return nil, err
	}
	h := &held{t: t}
	// As the dump and restore must: a task in seccomp strict mode is
	// killed by the first injected mmap, and a filter can deny any call.
	if err := ptrace.SetOptions(pid, unix.PTRACE_O_TRACESYSGOOD|unix.PTRACE_O_SUSPEND_SECCOMP); err != nil {
		return nil, err
	}
	if h.mask, err = ptrace.GetSigmask(pid); err != nil {
		return nil, err
	}
	if err := ptrace.SetSigmask(pid, ^uint64(0)); err != nil {
		return nil, err
	}
	maps, err := proc.ReadMaps(pid)
	if err != nil {
		return nil, err
	}
	for _, m := range maps {
		if m.Path == "[vdso]" {
			if t.SyscallIP, err = ptrace.FindSyscallInsn(pid, m.Start, m.End); err != nil {
				return nil, err
			}
		}
	}
	if h.s, err = ptrace.MapScratch(t, 0, 64<<10); err != nil {
		return nil, err
	}
	return h, nil
}

// release unmaps the scratch memory and lets the victim run on where it
// was stopped (its interrupted read restarts).
func (h *held) release() error {
	if h.s != nil {
		if err := h.s.Unmap(h.t); err != nil {
			return err
		}
	}
	if err := ptrace.SetSigmask(h.t.Tid, h.mask); err != nil {
		return err
	}
	if err := h.t.Restore(); err != nil {
		return err
	}
	return ptrace.Detach(h.t.Tid, 0)
}

// withHeld runs f on a locked tracer thread with pid held, and releases it.
func withHeld(t *testing.T, pid int, f func(h *held) error) {
	t.Helper()
	err := ptrace.RunLocked(func() error {
		h, err := hold(pid)
		if err != nil {
			return err
		}
		if err := f(h); err != nil {
			_ = h.release()
			return err
		}
		return h.release()
	})
	if err != nil {
		t.Fatal(err)
	}
}

func prctlGet(h *held, op int) (uint64, error) {
	return h.t.Call(fmt.Sprintf("prctl(%d)", op), unix.SYS_PRCTL, uint64(op))
}

// heldTask is the remote.Task of a held victim, as the restore's task is
// for the restore steps.
type heldTask struct{ h *held }

func (h *held) task() remote.Task { return heldTask{h} }

func (ht heldTask) Pid() int     { return ht.h.t.VTgid() }
func (ht heldTask) HostPid() int { return ht.h.t.Tid }

func (ht heldTask) Call(name string, nr uintptr, args ...uint64) (uint64, error) {
	return ht.h.t.Call(name, nr, args...)
}

func (ht heldTask) Put(off uint64, b []byte) (uint64, error) { return ht.h.s.Put(off, b) }
func (ht heldTask) Get(off uint64, n int) ([]byte, error)    { return ht.h.s.Get(off, n) }

func (ht heldTask) PassFile(f *os.File) (int, error) {
	return 0, errors.New("core tests pass no files")
}
