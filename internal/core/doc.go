// Package core owns the per-task state kept in core-PID.img besides
// memory and files: registers, signal handlers, blocked and pending
// signals, itimers, rlimits, credentials, rseq, robust futex list,
// clear_child_tid, sigaltstack, comm, personality, scheduling and a few
// prctl bits. Dump reads them from a seized task (ptrace requests, /proc
// and injected calls). The restore sets them inside the restored task
// through the task interface remote.Task: the process-wide state
// (RestoreProcess), each thread's own, credentials and seccomp filters
// (RestoreThread, RestoreCredsCached, RestoreSeccomp, with the thread's
// Task) and the POSIX timers (RestorePosixTimers); ptrace only blocks
// signals and gives the final registers.
//
// threadcalls.go holds the per-thread calls made into every thread of a
// process at once, as one table of calls per thread (ptrace.EachSeq) or
// one injection per call (ptrace.Each): AskThreads and AskThreadsOf for
// the dump (clear_child_tid, sigaltstack, pdeath signal, securebits,
// name) and RestoreThreadCalls for the
// restore (robust list, clear_child_tid, name, rseq, sigaltstack, pdeath
// signal; RestoreThreadRest does the rest of RestoreThread); AskThreadsOf
// asks the threads of many processes at once. processcalls.go holds the
// dump's process-wide calls (personality, sigactions, itimers,
// child_subreaper, membarrier), asked of many processes at once
// (AskProcesses), whose answers DumpProcess takes.
// threadproc.go reads what a dump needs of a thread without its tracer
// (ReadThreadProc: /proc files, sched_getattr, get_robust_list, the
// credentials' user namespace view), on any goroutine.
//
// All functions run on the tracer thread (see package ptrace), but
// ReadThreadProc and ReadImages' reading, which may run on any.
package core
