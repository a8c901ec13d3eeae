package restore

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/ptrace"
)

// threadFlags are the clone flags of a thread as pthread_create uses them.
const threadFlags = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND |
	unix.CLONE_THREAD | unix.CLONE_SYSVSEM

// cloneWithPid injects clone3 into t to create a task with exactly the
// given pid (a process, or with threadFlags a thread of t's process), and
// returns the new task stopped and traced: every task created during a
// restore is traced from birth (PTRACE_O_TRACEFORK/TRACECLONE).
func cloneWithPid(t *ptrace.Task, s *ptrace.Scratch, pid int, flags uint64) (*ptrace.Task, error) {
	const cloneArgsSize = 88 // struct clone_args up to set_tid_size
	args := make([]byte, cloneArgsSize+8)
	le := binary.LittleEndian
	le.PutUint64(args[0:], flags)
	if flags&unix.CLONE_THREAD == 0 {
		le.PutUint64(args[32:], uint64(unix.SIGCHLD)) // exit_signal
	}
	le.PutUint64(args[64:], s.Addr+cloneArgsSize) // set_tid
	le.PutUint64(args[72:], 1)                    // set_tid_size
	le.PutUint32(args[cloneArgsSize:], uint32(pid))
	a, err := s.Put(0, args)
	if err != nil {
		return nil, err
	}
	r, err := t.Syscall(unix.SYS_CLONE3, a, cloneArgsSize)
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create pid %d: %w", pid, ErrPidInUse)
		}
		return nil, fmt.Errorf("create pid %d with clone3 in pid %d: %w", pid, t.Tid, err)
	}
	if int(r) != pid {
		return nil, fmt.Errorf("clone3 for pid %d returned %d", pid, r)
	}
	st, err := ptrace.Wait(pid)
	if err != nil {
		return nil, fmt.Errorf("new task %d: %w", pid, err)
	}
	if st.Signal != unix.SIGSTOP {
		kill(pid)
		return nil, fmt.Errorf("new task %d stopped by %v, not SIGSTOP", pid, st.Signal)
	}
	nt, err := ptrace.Attached(pid, t.SyscallIP)
	if err != nil {
		kill(pid)
		return nil, err
	}
	if flags&unix.CLONE_THREAD != 0 {
		nt.Leader = t.Tgid()
	}
	return nt, nil
}
