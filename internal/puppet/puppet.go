package puppet

import (
	"fmt"
	"os"
	"os/exec"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/ptrace"
	"github.com/stasis-cr/stasis/internal/remote"
)

// PuppetArg is the argument the puppet is exec'ed with. The puppet never
// runs a single instruction of its own: it is stopped at the exec and
// only executes injected system calls. cmd/stasis exits at once if it
// ever sees this argument, in case it was run by hand.
const PuppetArg = "__stasis_puppet"

// Puppet is the helper process the restored tasks are cloned from.
type Puppet struct {
	cmd *exec.Cmd
	pid int // a sibling puppet's (StartSibling), which has no cmd
	// parent: the puppet is the process that split (split.go), this
	// process' parent, let go rather than killed.
	parent  bool
	Tr      *ptrace.Task
	Scratch *ptrace.Scratch
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

func Start(unprivileged bool) (*Puppet, error) {
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
	p := &Puppet{cmd: cmd}
	pid := cmd.Process.Pid
	st, err := ptrace.Wait(pid)
	if err != nil {
		p.Kill()
		return nil, fmt.Errorf("start puppet: %w", err)
	}
	if st.Signal != unix.SIGTRAP {
		p.Kill()
		return nil, fmt.Errorf("start puppet: stopped by %v, not the exec trap", st.Signal)
	}
	if err := ptrace.SetOptions(pid, opts); err != nil {
		p.Kill()
		return nil, err
	}
	if err := p.attach(pid); err != nil {
		p.Kill()
		return nil, err
	}
	return p, nil
}

// attach wraps the puppet pid, stopped at its exec, as a task to inject
// system calls into, with its scratch page.
func (p *Puppet) attach(pid int) error {
	vdso, err := findVDSO(pid)
	if err != nil {
		return err
	}
	ip, err := ptrace.FindSyscallInsn(pid, vdso.Start, vdso.End)
	if err != nil {
		return err
	}
	if p.Tr, err = ptrace.Attached(pid, ip); err != nil {
		return err
	}
	p.Scratch, err = ptrace.MapScratch(p.Tr, 0, 4096)
	return err
}

// OpenChannel gives the puppet a pidfd of stasis at fd number fd. Every
// task is cloned from the puppet or from another task and inherits it:
// through it a task takes the files stasis opens for it (pidfd_getfd).
// Opening it here, in stasis' own pid namespace, is what makes it work
// for tasks restored into a new one, where stasis has no pid to open.
func (p *Puppet) OpenChannel(fd int) error {
	pfd, err := p.Tr.Call("pidfd_open", unix.SYS_PIDFD_OPEN, uint64(os.Getpid()), 0)
	if err != nil {
		return err
	}
	if int(pfd) == fd {
		return nil
	}
	if _, err := p.Tr.Call("dup2", unix.SYS_DUP2, pfd, uint64(fd)); err != nil {
		return fmt.Errorf("move channel to fd %d: %w", fd, err)
	}
	_, err = p.Tr.Call("close", unix.SYS_CLOSE, pfd)
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

// Kill ends the puppet: killed, or let go if it is the process that
// split (it then exits with this process' status, see RunWait).
func (p *Puppet) Kill() {
	if p.parent {
		if p.pid != 0 {
			p.release()
		}
		return
	}
	if p.pid != 0 {
		p.killSibling()
		return
	}
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	}
}

// CloseInherited closes the fds the root task t inherited from the
// puppet but the channel (at fd number channelFd).
func CloseInherited(t remote.Task, channelFd int) error {
	ch := uint64(channelFd)
	if _, err := t.Call("close_range", unix.SYS_CLOSE_RANGE, 0, ch-1, 0); err != nil {
		return err
	}
	_, err := t.Call("close_range", unix.SYS_CLOSE_RANGE, ch+1, ^uint64(0)>>32, 0)
	return err
}

// CloseChannel closes task t's pidfd of stasis (at fd number channelFd)
// once it has all its files (see OpenChannel).
func CloseChannel(t remote.Task, channelFd int) error {
	_, err := t.Call("close channel", unix.SYS_CLOSE, uint64(channelFd))
	return err
}
