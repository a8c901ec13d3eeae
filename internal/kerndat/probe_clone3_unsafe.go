package kerndat

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
)

// probeClone3 asks clone3 for a child whose PID is our own, which is
// certainly in use. What it proves depends on where the kernel stops
// (kernel/fork.c, kernel/pid.c):
//
//	ENOSYS  no clone3 (or a seccomp profile hides it)
//	E2BIG   clone3 predates set_tid (5.3/5.4): the trailing fields are not zero
//	EPERM   set_tid is parsed, but we lack CAP_CHECKPOINT_RESTORE/CAP_SYS_ADMIN
//	        in the pid namespace's owner (checked in alloc_pid before the pid)
//	EEXIST  set_tid works end to end: validated, permitted, and the pid is
//	        looked up in the pid namespace
//
// EEXIST is the only answer that shows restore can pick PIDs; CRIU's
// kerndat probe (set_tid != NULL with set_tid_size 0 -> EINVAL) only shows
// that the field is parsed. The call cannot create a child, because our own
// pid is taken for as long as we run. Should it ever return 0 anyway, the
// child is a plain fork (flags 0: no shared memory or stack, unlike
// CLONE_VM, which would run Go code on our stack) and calls exit_group
// straight from the syscall return without touching the Go runtime, as
// forkExec does; the parent reaps it. The cost is a fork up to alloc_pid,
// including a copy of our page tables.
func probeClone3() []Feature {
	s, err := newScratch(4096)
	if err != nil {
		return withInfo(missing(Clone3SetTID, "mmap: %v", err))
	}
	defer s.free()
	const tidOff = 512
	*at[int32](s, tidOff) = int32(os.Getpid())
	args := at[linux.CloneArgs](s, 0)
	*args = linux.CloneArgs{ExitSignal: uint64(unix.SIGCHLD), SetTID: uint64(s.addr(tidOff)), SetTIDSize: 1}

	pid, _, e := unix.RawSyscall(unix.SYS_CLONE3, s.addr(0), unsafe.Sizeof(*args), 0)
	if e == 0 && pid == 0 {
		unix.RawSyscall(unix.SYS_EXIT_GROUP, 0, 0, 0)
	}
	switch e {
	case 0:
		var ws unix.WaitStatus
		linux.Wait4(int(pid), &ws, 0)
		return withInfo(missing(Clone3SetTID, "clone3 created pid %d although set_tid named our own pid %d", pid, os.Getpid()))
	case unix.EEXIST:
		return withInfo(ok(Clone3SetTID, "EEXIST on a used pid"))
	case unix.ENOSYS:
		return withInfo(missing(Clone3SetTID, "no clone3 (ENOSYS)"))
	case unix.E2BIG:
		return withInfo(missing(Clone3SetTID, "clone3 without set_tid (E2BIG)"))
	case unix.EPERM:
		return withInfo(missing(Clone3SetTID, "EPERM: needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN over the pid namespace"))
	default:
		return withInfo(missing(Clone3SetTID, "clone3 with set_tid of a used pid: %v (%s), want EEXIST", e, errnoName(e)))
	}
}

func errnoName(e unix.Errno) string {
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return fmt.Sprintf("errno %d", int(e))
}
