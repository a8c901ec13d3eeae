// Package linux is the bottom layer of stasis: the system calls the
// engine makes through wrappers of its own, and the kernel ABI that
// golang.org/x/sys/unix lacks.
//
//   - errors.go: ErrNotSupported, the one "not supported" of stasis;
//     every package's refusal of something (a kernel feature, an fd
//     kind, a mapping) wraps it, and the root package re-exports it.
//   - eintr.go, syscall_unsafe.go: calls retried on EINTR, whose errors
//     are *os.SyscallError (or *os.PathError) naming the call, so that
//     errors.Is(err, unix.EXXX) still works and no caller writes its own
//     retry loop.
//   - robust_unsafe.go: get_robust_list(2), which x/sys/unix lacks.
//   - kcmp.go, kcmp_unsafe.go: the one kcmp(2) wrapper (file
//     descriptions, mm, fd tables, epoll targets) and KcmpSet, kernel
//     objects kept in kcmp's order.
//   - uapi.go: every uapi constant and struct stasis defines by hand,
//     each citing its kernel header. Where x/sys/unix has a constant,
//     stasis uses unix's and it is not repeated here.
//
// Nothing here keeps state or cares which thread it runs on; ptrace
// requests are not here but in internal/ptrace, which owns the tracer
// thread.
package linux
