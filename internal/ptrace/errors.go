package ptrace

import "errors"

// ErrExited is returned when a tracee died while stasis waited for it.
var ErrExited = errors.New("task exited")

// ErrNotTracer is wrapped by the error of a call made for a task from a
// thread other than its tracer's: the goroutine that seized or created
// it did not stay locked to its thread (see RunLocked), or the call was
// handed to another goroutine.
var ErrNotTracer = errors.New("not on the tracer thread (ptrace requests must come from the thread that attached the task; see ptrace.RunLocked)")

// ErrNoSyscallInsn is wrapped when a range of a task's memory holds no
// syscall instruction to inject through.
var ErrNoSyscallInsn = errors.New("no syscall instruction")

// ErrSeqFault is wrapped when a task faulted while running a call table
// (EachSeq): a bug of stasis, which gave it a table or an argument that
// points nowhere.
var ErrSeqFault = errors.New("fault in injected code")
