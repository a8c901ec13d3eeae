package restore

import (
	"errors"
	"fmt"
	"os"
	"os/exec"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

// PuppetArg is the argument the puppet is exec'ed with. The puppet never
// runs a single instruction of its own: it is stopped at the exec and
// only executes injected system calls. cmd/stasis exits at once if it
// ever sees this argument, in case it was run by hand.
const PuppetArg = "__stasis_puppet"

// puppet is the helper process the restored tasks are cloned from.
type puppet struct {
	cmd     *exec.Cmd
	tr      *ptrace.Task
	scratch *ptrace.Scratch
}

// ptrace options for everything created during a restore: new tasks are
// traced from birth, and all of them die if stasis dies (no half-restored
// process can survive a crash of the restorer).
// Seccomp filters installed during the restore must not see the calls
// stasis injects after them.
// Without CAP_SYS_ADMIN the kernel refuses PTRACE_O_SUSPEND_SECCOMP; the
// restore then refuses trees with filters instead.
const restoreOpts = unix.PTRACE_O_EXITKILL | unix.PTRACE_O_TRACESYSGOOD |
	unix.PTRACE_O_TRACEFORK | unix.PTRACE_O_TRACECLONE | unix.PTRACE_O_SUSPEND_SECCOMP

func startPuppet(unprivileged bool) (*puppet, error) {
	opts := restoreOpts
	if unprivileged {
		opts &^= unix.PTRACE_O_SUSPEND_SECCOMP
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("start puppet: %w", err)
	}
	cmd := exec.Command(self, PuppetArg)
	cmd.SysProcAttr = &unix.SysProcAttr{Ptrace: true, Pdeathsig: unix.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start puppet %s: %w", self, err)
	}
	p := &puppet{cmd: cmd}
	pid := cmd.Process.Pid
	st, err := ptrace.Wait(pid)
	if err != nil {
		p.kill()
		return nil, fmt.Errorf("start puppet: %w", err)
	}
	if st.Signal != unix.SIGTRAP {
		p.kill()
		return nil, fmt.Errorf("start puppet: stopped by %v, not the exec trap", st.Signal)
	}
	if err := ptrace.SetOptions(pid, opts); err != nil {
		p.kill()
		return nil, err
	}
	vdso, err := findVDSO(pid)
	if err != nil {
		p.kill()
		return nil, err
	}
	ip, err := ptrace.FindSyscallInsn(pid, vdso.Start, vdso.End)
	if err != nil {
		p.kill()
		return nil, err
	}
	if p.tr, err = ptrace.Attached(pid, ip); err != nil {
		p.kill()
		return nil, err
	}
	if p.scratch, err = ptrace.MapScratch(p.tr, 0, 4096); err != nil {
		p.kill()
		return nil, err
	}
	return p, nil
}

// openChannel gives the puppet a pidfd of stasis at fd number fd. Every
// task is cloned from the puppet or from another task and inherits it:
// through it a task takes the files stasis opens for it (pidfd_getfd).
// Opening it here, in stasis' own pid namespace, is what makes it work
// for tasks restored into a new one, where stasis has no pid to open.
func (p *puppet) openChannel(fd int) error {
	pfd, err := p.tr.Call("pidfd_open", unix.SYS_PIDFD_OPEN, uint64(os.Getpid()), 0)
	if err != nil {
		return err
	}
	if int(pfd) == fd {
		return nil
	}
	if _, err := p.tr.Call("dup2", unix.SYS_DUP2, pfd, uint64(fd)); err != nil {
		return fmt.Errorf("move channel to fd %d: %w", fd, err)
	}
	_, err = p.tr.Call("close", unix.SYS_CLOSE, pfd)
	return err
}

func findVDSO(pid int) (proc.VMA, error) {
	vmas, err := proc.ReadMaps(pid)
	if err != nil {
		return proc.VMA{}, err
	}
	for _, v := range vmas {
		if v.Path == "[vdso]" {
			return v, nil
		}
	}
	return proc.VMA{}, fmt.Errorf("pid %d has no [vdso]", pid)
}

// ErrPidInUse is wrapped when a PID of the image is taken on this host.
var ErrPidInUse = errors.New("pid already in use")

func (p *puppet) kill() {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	}
}

// kill ends a task created by the restore and reaps it: stasis is its
// tracer and, once the puppet is gone, its parent (child subreaper).
func kill(pid int) {
	_ = unix.Kill(pid, unix.SIGKILL)
	var ws unix.WaitStatus
	for {
		_, err := linux.Wait4(pid, &ws, unix.WALL)
		if err != nil || ws.Exited() || ws.Signaled() {
			return
		}
	}
}
