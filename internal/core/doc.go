// Package core owns the per-task state kept in core-PID.img besides
// memory and files: registers, signal handlers, blocked and pending
// signals, itimers, rlimits, credentials, rseq, robust futex list,
// clear_child_tid, sigaltstack, comm, personality, scheduling and a few
// prctl bits. Dump reads them from a seized task (ptrace requests, /proc
// and injected calls). The restore sets them inside the restored task:
// the process-wide state, each thread's own and the POSIX timers through
// the task interface remote.Task (RestoreProcess, RestoreThread with the
// thread's Task, RestorePosixTimers), credentials and seccomp through the
// ptrace task.
//
// All functions run on the tracer thread (see package ptrace).
package core
