package restore

import (
	"os"

	"github.com/stasis-cr/stasis/internal/ptrace"
	"github.com/stasis-cr/stasis/internal/remote"
	"github.com/stasis-cr/stasis/internal/tty"
	"golang.org/x/sys/unix"
)

// taskRestorer is the remote.Task the resources' task-side steps get.
var _ remote.Task = (*taskRestorer)(nil)

func (tr *taskRestorer) Pid() int     { return tr.img.Pid() }
func (tr *taskRestorer) HostPid() int { return tr.t.Tid }

func (tr *taskRestorer) Call(name string, nr uintptr, args ...uint64) (uint64, error) {
	return tr.t.Call(name, nr, args...)
}

func (tr *taskRestorer) Put(off uint64, b []byte) (uint64, error) { return tr.s.Put(off, b) }

func (tr *taskRestorer) Get(off uint64, n int) ([]byte, error) { return tr.s.Get(off, n) }

func (tr *taskRestorer) PassFile(f *os.File) (int, error) {
	if tr.r.chanSock != nil {
		return tr.passBySocket(f)
	}
	fd, err := tr.t.Call("pidfd_getfd", unix.SYS_PIDFD_GETFD, uint64(tr.r.channelFd), uint64(f.Fd()), 0)
	return int(fd), err
}

// threadTask is the remote.Task of one thread of a process being
// restored, for the steps that are the thread's own (core.RestoreThread):
// its calls run in that thread; it shares the process's scratch memory
// and files.
type threadTask struct {
	*taskRestorer
	t *ptrace.Task
}

// thread returns the remote.Task of t, a thread of tr's process.
func (tr *taskRestorer) thread(t *ptrace.Task) remote.Task { return threadTask{tr, t} }

// Pid is the thread's tid as the images know it.
func (th threadTask) Pid() int     { return th.t.VTid() }
func (th threadTask) HostPid() int { return th.t.Tid }

func (th threadTask) Call(name string, nr uintptr, args ...uint64) (uint64, error) {
	return th.t.Call(name, nr, args...)
}

// ttyProcesses are the processes of the tree as the terminals need them,
// parents first.
func (r *restorer) ttyProcesses() []tty.Process {
	ps := make([]tty.Process, 0, len(r.procs))
	for _, tr := range r.procs {
		ps = append(ps, tty.Process{Task: tr, Sid: tr.img.Sid(), Pgid: tr.img.Pgid(), Zombie: tr.img.Zombie, Live: tr.img.Live()})
	}
	return ps
}
