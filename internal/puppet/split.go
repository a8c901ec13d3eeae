package puppet

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

// The split: how a sibling restore (criu's --restore-sibling, the RPC's
// rst_sibling) leaves the process that started stasis with the root as
// its only new child.
//
// criu forks the root with CLONE_PARENT from its own process: the parent
// (LXC, runc) has criu, then the root as children, and once it has
// reaped criu, the root alone. LXC relies on it: it takes the first pid
// of its /proc/self/task/TID/children for the container's init. stasis
// clones the root from a puppet, a process held at its exec, and the
// process the parent started is a Go program of many threads. So that
// process splits: Split starts the restorer (this binary again, same
// command line) as its child and waits. The restorer seizes it
// (startParent) and tells it to go on: it execs the puppet (WaitArg),
// which the restorer holds at the exec. The root, cloned from it with
// CLONE_PARENT, is the parent's next child. Once the root exists the
// restorer lets the puppet go (release): it runs RunWait, waits for the
// restorer and exits with its status, which the parent reads as criu's.
// No other process is ever the parent's child.

// WaitArg is the argument the split's process execs the puppet with,
// followed by the restorer's pid (see RunWait).
const WaitArg = "__stasis_sibling_wait"

// splitEnv tells the restorer of a split the fd of its pipe to the
// process that split and that process' pid: "FD:PID".
const splitEnv = "STASIS_SIBLING_SPLIT"

// splitChannel is the restorer's side of the split: fd, the write end of
// the pipe the split process waits on (-1 once used), parent its pid.
type splitChannel struct {
	fd     int
	parent int
}

// split is set when this process is the restorer of a split.
var split *splitChannel

func init() {
	v, ok := os.LookupEnv(splitEnv)
	if !ok {
		return
	}
	// Not for the restorer's own children (action scripts, helpers).
	os.Unsetenv(splitEnv)
	fdStr, pidStr, _ := strings.Cut(v, ":")
	fd, err1 := strconv.Atoi(fdStr)
	pid, err2 := strconv.Atoi(pidStr)
	if err1 != nil || err2 != nil || fd < 3 {
		return
	}
	unix.CloseOnExec(fd)
	split = &splitChannel{fd: fd, parent: pid}
}

// Restorer tells whether this process is the restorer a Split started:
// its sibling restore takes its parent as the puppet, and it must not
// split again.
func Restorer() bool { return split != nil }

// Split makes this process the puppet of a sibling restore that a
// restorer, started now with command line args (this binary), performs
// (see the comment at the top). It returns the restorer's exit status
// when the restorer exited without taking this process (it failed before
// the restore began); once taken, this process execs the puppet and
// Split does not return. It must run on the main thread (the program's
// main package locks it in an init): the restorer seizes the main
// thread, and only an exec from it stops at the exec event.
func Split(args []string) (int, error) {
	if tid, pid := unix.Gettid(), unix.Getpid(); tid != pid {
		return 0, fmt.Errorf("split for a sibling restore: runs on thread %d, not the main thread %d: %w", tid, pid, ErrNotMainThread)
	}
	self, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("split for a sibling restore: %w", err)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return 0, fmt.Errorf("split for a sibling restore: pipe: %w", err)
	}
	rd, wr := p[0], p[1]
	defer unix.Close(rd)
	// The write end reaches the restorer at its own number; every fd the
	// parent gave this process (swrk's socket, --inherit-fd's) reaches it
	// too, as they are not close-on-exec.
	if _, err := unix.FcntlInt(uintptr(wr), unix.F_SETFD, 0); err != nil {
		unix.Close(wr)
		return 0, fmt.Errorf("split for a sibling restore: %w", err)
	}
	env := append(os.Environ(), fmt.Sprintf("%s=%d:%d", splitEnv, wr, os.Getpid()))
	pid, err := syscall.ForkExec(self, args, &syscall.ProcAttr{Env: env, Files: []uintptr{0, 1, 2}})
	unix.Close(wr)
	if err != nil {
		return 0, fmt.Errorf("split for a sibling restore: start the restorer %s: %w", self, err)
	}
	stop := forwardSignals(pid)
	var b [1]byte
	if n, _ := linux.Read(rd, b[:]); n == 1 {
		// Seized by the restorer, which holds the puppet at this exec.
		err := unix.Exec(self, []string{self, WaitArg, strconv.Itoa(pid)}, os.Environ())
		stop()
		return 0, fmt.Errorf("split for a sibling restore: exec the puppet %s: %w", self, err)
	}
	stop()
	return waitRestorer(pid), nil
}

// RunWait is the main of the split's puppet once the restorer has let it
// go (the root exists): wait for the restorer (its child) and exit with
// its status.
func RunWait(restorer string) int {
	pid, err := strconv.Atoi(restorer)
	if err != nil || pid <= 0 {
		return 2
	}
	defer forwardSignals(pid)()
	return waitRestorer(pid)
}

// waitRestorer reaps the restorer and returns its exit status (128+N if
// signal N killed it, as a shell says).
func waitRestorer(pid int) int {
	var ws unix.WaitStatus
	if _, err := linux.Wait4(pid, &ws, 0); err != nil {
		return 1
	}
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// forwardSignals passes the signals that end a criu run on to the
// restorer, which rolls back or finishes as it would have; runc and LXC
// signal the process they started.
func forwardSignals(pid int) (stop func()) {
	ch := make(chan os.Signal, 4)
	done := make(chan struct{})
	signal.Notify(ch, unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT)
	go func() {
		for {
			select {
			case s := <-ch:
				_ = unix.Kill(pid, s.(unix.Signal))
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}

// startParent takes the process that split (this process' parent) as the
// puppet: seized, told to exec the puppet, held at the exec. It must run
// on the tracer thread.
func startParent(unprivileged bool) (*Puppet, error) {
	opts := restoreOpts
	if unprivileged {
		opts &^= unix.PTRACE_O_SUSPEND_SECCOMP
	}
	pid := split.parent
	if split.fd < 0 {
		return nil, fmt.Errorf("start sibling puppet: pid %d, the process that split, was the puppet of a restore already: %w", pid, ErrSplitUsed)
	}
	if ppid := os.Getppid(); ppid != pid {
		return nil, fmt.Errorf("start sibling puppet: pid %d, the process that split, is gone (the parent is %d now): %w", pid, ppid, unix.ESRCH)
	}
	// Only the exec is traced: with PTRACE_O_TRACECLONE the threads the
	// Go runtime starts meanwhile would be attached and stopped.
	if err := ptrace.Seize(pid, unix.PTRACE_O_TRACEEXEC); err != nil {
		return nil, fmt.Errorf("start sibling puppet: seize pid %d, the process that split: %w", pid, err)
	}
	p := &Puppet{pid: pid, parent: true}
	_, err := linux.Write(split.fd, []byte{1})
	unix.Close(split.fd)
	split.fd = -1
	if err != nil {
		p.Kill()
		return nil, fmt.Errorf("start sibling puppet: %w", err)
	}
	if err := p.takeAtExec(pid, opts); err != nil {
		return nil, fmt.Errorf("start sibling puppet: pid %d: %w", pid, err)
	}
	return p, nil
}

// release lets the split's puppet go once the root exists (or the
// restore failed): its registers are its exec's again, so it runs
// RunWait from its first instruction. Its group stop (reattach's) is
// ended first: the kernel stops a detached task again if its group is
// still marked stopped.
func (p *Puppet) release() {
	if p.Tr != nil {
		_ = p.Tr.Restore()
	}
	_ = unix.Kill(p.pid, unix.SIGCONT)
	_ = ptrace.Detach(p.pid, 0)
	p.pid = 0
}
