package pstree

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

// ThreadFlags are the clone flags of a thread as pthread_create uses them.
const ThreadFlags = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND |
	unix.CLONE_THREAD | unix.CLONE_SYSVSEM

// CloneWithPid injects clone3 into t to create a task with exactly the
// given pid (a process, or with ThreadFlags a thread of t's process), and
// returns the new task stopped and traced: every task created during a
// restore is traced from birth (PTRACE_O_TRACEFORK/TRACECLONE). The pid is
// the one the task has in its own pid namespace (with CLONE_NEWPID, the
// new one); the kernel reports its pid in stasis' namespace in the ptrace
// event, and that is what stasis uses to trace it.
func CloneWithPid(t *ptrace.Task, s *ptrace.Scratch, pid int, flags uint64) (*ptrace.Task, error) {
	return CloneWithPids(t, s, []int{pid}, flags)
}

// CloneWithPids is CloneWithPid with a pid for each pid namespace level
// the task is to have, innermost first (clone3's set_tid): a task of a
// nested pid namespace keeps its pid in each.
func CloneWithPids(t *ptrace.Task, s *ptrace.Scratch, pids []int, flags uint64) (*ptrace.Task, error) {
	a, err := s.Put(0, cloneArgs(s.Addr, pids, flags))
	if err != nil {
		return nil, err
	}
	r, err := t.Syscall(unix.SYS_CLONE3, a, cloneArgsSize)
	return cloned(t, pids, flags, r, err)
}

// cloneArgsSize is struct clone_args (include/uapi/linux/sched.h) up to
// cgroup; the set_tid array follows it.
const cloneArgsSize = unix.CLONE_ARGS_SIZE_VER2

// cloneArgs returns clone3's arguments for a task with pids (innermost
// first), to be put at addr of the cloner's memory.
func cloneArgs(addr uint64, pids []int, flags uint64) []byte {
	args := make([]byte, cloneArgsSize+8*len(pids))
	le := binary.LittleEndian
	le.PutUint64(args[0:], flags)
	// clone3 takes no exit signal with CLONE_PARENT: the child gets the
	// cloner's own, which is SIGCHLD for every task stasis makes.
	if flags&(unix.CLONE_THREAD|unix.CLONE_PARENT) == 0 {
		le.PutUint64(args[32:], uint64(unix.SIGCHLD)) // exit_signal
	}
	le.PutUint64(args[64:], addr+cloneArgsSize) // set_tid
	le.PutUint64(args[72:], uint64(len(pids)))  // set_tid_size
	for i, p := range pids {
		le.PutUint32(args[cloneArgsSize+4*i:], uint32(p)) // pid_t
	}
	return args
}

// cloned takes the task that t's injected clone3 for pids created (r and
// err are the call's result): it waits for its first stop and wraps it.
func cloned(t *ptrace.Task, pids []int, flags uint64, r uint64, err error) (*ptrace.Task, error) {
	pid := pids[0]
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create pid %d: %w", pid, ErrPidInUse)
		}
		return nil, fmt.Errorf("create pid %d with clone3 in pid %d: %w", pid, t.Tid, err)
	}
	// clone3 returns the pid in the cloner's own pid namespace, which is
	// the innermost one unless the cloner joined another for its children
	// (setns: an external pid namespace, `unshare --pid --fork`'s parent);
	// then the new task's NSpid says.
	if len(t.Forked) != 1 {
		return nil, fmt.Errorf("clone3 for pid %d: no ptrace event for the new task", pid)
	}
	return take(t, t.Forked[0], pids, flags, r)
}

// take wraps host, the task that t's clone3 for pids made (r is what the
// call returned), once it has stopped.
func take(t *ptrace.Task, host int, pids []int, flags uint64, r uint64) (*ptrace.Task, error) {
	pid := pids[0]
	checkInner := flags&unix.CLONE_NEWPID == 0 && int(r) != pid
	st, err := ptrace.Wait(host)
	if err != nil {
		return nil, fmt.Errorf("new task %d: %w", pid, err)
	}
	if st.Signal != unix.SIGSTOP {
		Kill(host)
		return nil, fmt.Errorf("new task %d stopped by %v, not SIGSTOP", pid, st.Signal)
	}
	if checkInner {
		if ps, err := proc.ReadStatus(host); err != nil || len(ps.NSpid) == 0 || ps.NSpid[len(ps.NSpid)-1] != pid {
			Kill(host)
			return nil, fmt.Errorf("clone3 for pid %d returned %d, whose own pid is not %d (%v)", pid, r, pid, err)
		}
	}
	nt, err := ptrace.Attached(host, t.SyscallIP)
	if err != nil {
		Kill(host)
		return nil, err
	}
	if host != pid {
		nt.NsTid = pid
	}
	if flags&unix.CLONE_THREAD != 0 {
		nt.Leader = t.Tgid()
		if t.VTgid() != t.Tgid() {
			nt.NsLeader = t.VTgid()
		}
	}
	return nt, nil
}
