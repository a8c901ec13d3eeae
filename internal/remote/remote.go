// Package remote is what a resource sees of a task being restored: the
// few calls its task-side restore steps make inside the task (a POSIX
// lock, a file owner, an epoll target, a controlling terminal, an AIO
// ring, a timer must be set up by the task itself, since the kernel ties
// them to the caller). The restore orchestrator's task satisfies Task;
// resources import only this package, never the orchestrator, so that a
// resource's dump, restore and task-side steps stay in one place.
//
// Every call must be made on the tracer thread (ptrace.RunLocked), as
// the orchestrator's own calls are.
package remote

import "os"

// Task is one process being restored, stopped under ptrace with its
// injection page mapped (its leader thread; a thread-specific step gets
// the thread's Task).
type Task interface {
	// Pid is the task's pid as the images know it (the number of its
	// own pid namespace), the one its files' owners and locks name.
	Pid() int
	// HostPid is the pid stasis sees for the task (differs with --pidns).
	HostPid() int
	// Call runs one system call in the task and returns its result; a
	// negative result is an error naming the call (name) and the task.
	Call(name string, nr uintptr, args ...uint64) (uint64, error)
	// Put writes b into the task's scratch memory at offset off and
	// returns its address in the task, for pointer arguments. The
	// scratch is the task's own and is reused by the next step.
	Put(off uint64, b []byte) (uint64, error)
	// Get reads n bytes of the scratch memory at offset off (what a
	// call wrote through a pointer argument).
	Get(off uint64, n int) ([]byte, error)
	// PassFile puts a copy of stasis' open file f into the task (the
	// same open file description, at the lowest free fd, close-on-exec)
	// and returns its number there.
	PassFile(f *os.File) (int, error)
}

// Call is one system call of a Seq.
type Call struct {
	Nr   uintptr
	Args [6]uint64
}

// Seq is what a Task may offer besides: many calls made in a row inside
// the task with one round trip through ptrace (the restore's tasks run
// them as a table, ptrace.EachSeq), where Call costs one each. res[i]
// is call i's result and errs[i] its errno; err is set if the calls
// could not be run (some may have been). A caller type-asserts a Task
// to Seq and makes its calls one by one where it is not one.
type Seq interface {
	Seq(calls []Call) (res []uint64, errs []error, err error)
}
