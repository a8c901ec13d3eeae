package ptrace

import (
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Every ptrace stop of a tracee sends its tracer's process a SIGCHLD
// (do_notify_parent_cldstop), and the Go runtime has a handler for it:
// each stop interrupts a thread of stasis, or wakes an idle one from its
// futex sleep, for a signal nobody reads (the tracer learns of its
// stops by wait4, which the kernel wakes whatever the signal's action).
// A dump of 10,000 threads takes ~10 stops per thread; the signals cost
// about an eighth of its CPU time. SA_NOCLDSTOP on the handler tells the
// kernel not to send SIGCHLD for stops at all; exits still send it.
//
// The action is the process's, so it is changed only while a tracer
// runs (quietStops in RunLocked) and put back after the last one: a
// program that embeds stasis and waits for its own children's stops
// with signal.Notify misses none outside a dump or a restore.

// sigaction is the kernel's struct sigaction on x86_64 (the rt_sigaction
// ABI, with an 8-byte sigset).
type sigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

const saNoCldStop = 0x1 // SA_NOCLDSTOP, include/uapi/asm-generic/signal-defs.h

var quiet struct {
	sync.Mutex
	users int
	set   bool // SA_NOCLDSTOP added by quietStops, to take off again
}

func rtSigaction(sig unix.Signal, act, old *sigaction) error {
	_, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(act)), uintptr(unsafe.Pointer(old)), 8, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// quietStops adds SA_NOCLDSTOP to the SIGCHLD handler while a tracer
// runs; the function it returns undoes it when the last tracer ends. A
// SIGCHLD that is ignored or left at its default is not sent anyway.
func quietStops() func() {
	quiet.Lock()
	defer quiet.Unlock()
	quiet.users++
	if quiet.users == 1 {
		var act sigaction
		if rtSigaction(unix.SIGCHLD, nil, &act) == nil && act.handler > 1 && act.flags&saNoCldStop == 0 {
			act.flags |= saNoCldStop
			quiet.set = rtSigaction(unix.SIGCHLD, &act, nil) == nil
		}
	}
	return func() {
		quiet.Lock()
		defer quiet.Unlock()
		quiet.users--
		if quiet.users > 0 || !quiet.set {
			return
		}
		quiet.set = false
		var act sigaction
		if rtSigaction(unix.SIGCHLD, nil, &act) == nil && act.flags&saNoCldStop != 0 {
			act.flags &^= saNoCldStop
			_ = rtSigaction(unix.SIGCHLD, &act, nil)
		}
	}
}
