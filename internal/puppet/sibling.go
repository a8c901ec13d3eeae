package puppet

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

// SiblingArg is the argument of the process that becomes the puppet of a
// restore whose root must be a sibling of stasis (criu's rst_sibling,
// --restore-sibling) when stasis has not split (split.go): a child of
// stasis' parent, as runc and go-criu expect of `criu swrk`, which they
// wait for as their child.
//
// criu forks the root itself with CLONE_PARENT. stasis clones the root
// from its puppet, so the puppet must be a child of stasis' parent too.
// The CLI and swrk split (split.go): the process the parent started
// becomes the puppet. A program that restores through the library
// without splitting gets this: stasis starts this process with
// CLONE_PARENT (a fork of stasis, many threads), seizes its main thread,
// and lets it exec the puppet. The puppet, traced since before its exec
// and stopped at the exec event, then clones the root with CLONE_PARENT.
// What the parent keeps from this: one more child, the puppet, killed
// once the root exists and listed before it; a parent that reaps every
// child (runc, conmon, containerd's shim are subreapers that do) collects
// it, another finds it as a zombie until it exits.
const SiblingArg = "__stasis_sibling"

// siblingGoFd is where the sibling finds the pipe stasis writes to once
// it has seized it; EOF (stasis gone) makes it exit.
const siblingGoFd = 3

func init() {
	// The sibling's exec must come from its main thread, the one stasis
	// seizes (its tid is the pid). Locked during init, the main goroutine
	// stays on the main thread through main.
	if len(os.Args) > 1 && os.Args[1] == SiblingArg {
		runtime.LockOSThread()
	}
}

// RunSibling is the sibling's main: wait until stasis has seized this
// thread, then exec the puppet. It returns only if that fails.
func RunSibling() int {
	var b [1]byte
	n, err := unix.Read(siblingGoFd, b[:])
	if n != 1 || err != nil {
		return 2 // stasis gave up
	}
	unix.Close(siblingGoFd)
	self, err := os.Executable()
	if err != nil {
		return 2
	}
	_ = unix.Exec(self, []string{self, PuppetArg}, os.Environ())
	return 2
}

// StartSibling starts the puppet as a child of stasis' parent: stasis'
// parent itself when this process is the restorer of a split
// (split.go), a process of its own otherwise (see SiblingArg). Its
// children cloned with CLONE_PARENT are then children of stasis' parent.
// It must run on the tracer thread.
func StartSibling(unprivileged bool) (*Puppet, error) {
	if split != nil {
		return startParent(unprivileged)
	}
	opts := restoreOpts
	if unprivileged {
		opts &^= unix.PTRACE_O_SUSPEND_SECCOMP
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("start sibling puppet: %w", err)
	}
	var pfd [2]int
	if err := unix.Pipe2(pfd[:], unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("start sibling puppet: pipe: %w", err)
	}
	rd, wr := os.NewFile(uintptr(pfd[0]), "sibling-go-r"), os.NewFile(uintptr(pfd[1]), "sibling-go-w")
	defer rd.Close()
	defer wr.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("start sibling puppet: %w", err)
	}
	defer null.Close()
	// syscall.ForkExec, not os/exec: os/exec asks for a pidfd, which
	// makes Go use clone3, and clone3 refuses CLONE_PARENT with an exit
	// signal; clone(2) gives the child stasis' own exit signal (SIGCHLD).
	nfd := null.Fd()
	pid, err := syscall.ForkExec(self, []string{self, SiblingArg}, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{nfd, nfd, nfd, rd.Fd()},
		Sys:   &syscall.SysProcAttr{Cloneflags: unix.CLONE_PARENT},
	})
	if err != nil {
		return nil, fmt.Errorf("start sibling puppet %s: %w", self, err)
	}
	p := &Puppet{pid: pid}
	// Only the exec is traced: with PTRACE_O_TRACECLONE the threads the
	// Go runtime starts meanwhile would be attached and stopped.
	if err := ptrace.Seize(pid, unix.PTRACE_O_TRACEEXEC); err != nil {
		_ = unix.Kill(pid, unix.SIGKILL)
		return nil, fmt.Errorf("start sibling puppet: %w", err)
	}
	if _, err := wr.Write([]byte{1}); err != nil {
		p.Kill()
		return nil, fmt.Errorf("start sibling puppet: %w", err)
	}
	if err := p.takeAtExec(pid, opts); err != nil {
		return nil, fmt.Errorf("start sibling puppet: %w", err)
	}
	return p, nil
}

// takeAtExec waits until the seized process pid has exec'ed the puppet
// (PTRACE_O_TRACEEXEC), then makes it the puppet, attached with opts. On
// failure the process is killed (see Kill).
func (p *Puppet) takeAtExec(pid int, opts int) error {
	for {
		st, err := ptrace.Wait(pid)
		if err != nil {
			p.pid = 0 // gone
			return err
		}
		if st.Signal == unix.SIGTRAP && st.Event == unix.PTRACE_EVENT_EXEC {
			break
		}
		// The Go runtime's own signals (SIGURG preemption, ...) before
		// the exec: deliver them, stop only at the exec.
		sig := st.Signal
		if st.Event != 0 {
			sig = 0
		}
		if err := ptrace.Cont(pid, int(sig)); err != nil {
			p.Kill()
			return err
		}
	}
	// Seized, its children would be seized too, and stop at birth with a
	// PTRACE_EVENT_STOP instead of the SIGSTOP the restore expects. Attach
	// it the old way, as the puppet a restore starts as its child is:
	// stopped, let go, attached again, its SIGSTOP taken at the entry.
	if err := p.reattach(pid); err != nil {
		p.Kill()
		return err
	}
	if err := ptrace.SetOptions(pid, opts); err != nil {
		p.Kill()
		return err
	}
	if err := p.attach(pid); err != nil {
		p.Kill()
		return err
	}
	return nil
}

// reattach turns the seized puppet, at its exec stop, into one attached
// with PTRACE_ATTACH, stopped at its first instruction in a
// signal-delivery stop. Between the detach and the attach it is
// group-stopped (a SIGSTOP queued before the detach is taken on its way
// to user space): it runs no instruction of its own.
func (p *Puppet) reattach(pid int) error {
	if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
		return err
	}
	if err := ptrace.Detach(pid, 0); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := proc.ReadStat(pid)
		if err != nil {
			return err
		}
		if st.State == 'T' {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d not stopped after 10s (state %c)", pid, st.State)
		}
		time.Sleep(100 * time.Microsecond)
	}
	if err := unix.PtraceAttach(pid); err != nil {
		return fmt.Errorf("ptrace attach %d: %w", pid, err)
	}
	// The group stop as the tracer sees it, then the attach's SIGSTOP.
	for i := 0; i < 2; i++ {
		st, err := ptrace.Wait(pid)
		if err != nil {
			return err
		}
		if st.Signal != unix.SIGSTOP {
			return fmt.Errorf("pid %d stopped by %v, not SIGSTOP", pid, st.Signal)
		}
		if i == 0 {
			if err := ptrace.Cont(pid, 0); err != nil {
				return err
			}
		}
	}
	return nil
}

// killSibling kills a puppet that is not stasis' child and waits for it
// as its tracer; the zombie goes to its parent.
func (p *Puppet) killSibling() {
	_ = unix.Kill(p.pid, unix.SIGKILL)
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(p.pid, &ws, unix.WALL, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || ws.Exited() || ws.Signaled() {
			break
		}
	}
	p.pid = 0
}
