// Package ptrace owns every ptrace(2) request stasis makes: seizing and
// interrupting tasks, reading and writing their registers, FPU/AVX state,
// signal masks and queues, and injecting system calls into a stopped task
// (Remote.Syscall), which is how stasis does without a parasite blob.
//
// Thread rule: the kernel binds a tracee to the OS thread that attached it,
// and only that thread may issue requests for it. Callers run every
// function of this package on one goroutine that has called
// runtime.LockOSThread and never unlocks (see dump and restore, which run
// their whole orchestration on such a goroutine). wait4 may come from any
// thread of the process, but it is done here too for simplicity.
package ptrace
