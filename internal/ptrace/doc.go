// Package ptrace owns every ptrace(2) request stasis makes: seizing and
// interrupting tasks, reading and writing their registers, FPU/AVX state,
// signal masks and queues, rseq and seccomp state, and injecting system
// calls into a stopped task (Task.Syscall), which is how stasis does
// without a parasite blob. No other package of the engine issues a
// ptrace request: kerndat's probes use these functions too. (testutil's
// FlipXMMByte, a test's fault injector, makes its own: it cannot import
// this package, whose tests import testutil.)
//
//   - locked.go: RunLocked, the tracer thread.
//   - ptrace_unsafe.go: the requests, one function each.
//   - task.go: Task (a stopped tracee), Wait, seizing, injected calls.
//   - batch.go: Each, one call injected into many tasks at once (the
//     threads of a process), their stops overlapped.
//   - seq.go: EachSeq, a table of calls run by each task in one go
//     (SeqCode, a 55-byte fragment ending on a trap): one to three
//     stops for all of a thread's calls.
//   - scratch.go: memory mapped inside a task for pointer arguments
//     (executable where it holds SeqCode); scratcheach.go: in many at
//     once.
//   - mem_unsafe.go: tracee memory I/O (process_vm_readv/writev and
//     /proc/PID/mem).
//   - sigchld_unsafe.go: no SIGCHLD for tracee stops while a tracer
//     runs (SA_NOCLDSTOP).
//   - errors.go: ErrExited, ErrNotTracer, ErrSeqFault.
//
// Thread rule: the kernel binds a tracee to the OS thread that attached
// it, and only that thread may issue requests for it (from any other the
// kernel says ESRCH, as if the task were gone). Callers run the requests
// and Task's methods on one goroutine that has called
// runtime.LockOSThread and never unlocks: RunLocked starts one (dump and
// restore run their whole orchestration on it). Task.Syscall checks that
// it runs on the thread that attached its task and otherwise fails with
// ErrNotTracer. wait4 for a tracee is done on that thread too, so that no
// other thread consumes its stops.
//
// What may run off the tracer thread: the memory I/O of mem_unsafe.go
// (ReadMem, WriteMem, ReadvMem, WritevMem, ReadMemNoPin, MemReader and Scratch's
// Put and Get), which are process_vm_readv/writev and /proc/PID/mem
// rather than ptrace requests and need only ptrace access to the task
// (PTRACE_MODE_ATTACH), not its stop: the dump's page copy and the
// restore's page fill run them on several goroutines. The task must stay
// stopped meanwhile, which is the tracer's business.
package ptrace
