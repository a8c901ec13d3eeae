// Package core owns the per-task state kept in core-PID.img besides
// memory and files: registers, signal handlers, blocked and pending
// signals, itimers, rlimits, credentials, rseq, robust futex list,
// clear_child_tid, sigaltstack, comm, personality, scheduling and a few
// prctl bits. Dump reads them from a seized task (ptrace requests, /proc
// and injected calls); Restore sets them inside the puppet task.
//
// All functions run on the tracer thread (see package ptrace).
package core
