package testutil

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// x86-64 PTRACE_GETFPREGS/SETFPREGS (arch/x86/include/uapi/asm/ptrace-abi.h)
// move a user_fpregs_struct: the 512-byte FXSAVE area, xmm0 at byte 160.
const (
	ptraceGetFPRegs = 14
	ptraceSetFPRegs = 15
	fxsaveXMM0      = 160
)

// FlipXMMByte changes one byte of register xmm<reg> of the running task PID,
// the way a dumper that lost the FPU state would: the victims' self-checks
// are tested with it. The task is seized, changed and detached.
func FlipXMMByte(pid, reg int) (err error) {
	runtime.LockOSThread() // every ptrace request must come from the tracer thread
	defer runtime.UnlockOSThread()
	if err := unix.PtraceSeize(pid); err != nil {
		return fmt.Errorf("seize %d: %w", pid, err)
	}
	defer func() {
		if derr := unix.PtraceDetach(pid); err == nil && derr != nil {
			err = fmt.Errorf("detach %d: %w", pid, derr)
		}
	}()
	if err := unix.PtraceInterrupt(pid); err != nil {
		return fmt.Errorf("interrupt %d: %w", pid, err)
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, unix.WALL, nil); err != nil {
		return fmt.Errorf("wait %d: %w", pid, err)
	}
	var fx [512]byte
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, ptraceGetFPRegs, uintptr(pid), 0, uintptr(unsafe.Pointer(&fx[0])), 0, 0); e != 0 {
		return fmt.Errorf("PTRACE_GETFPREGS %d: %w", pid, e)
	}
	fx[fxsaveXMM0+16*reg] ^= 0xff
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, ptraceSetFPRegs, uintptr(pid), 0, uintptr(unsafe.Pointer(&fx[0])), 0, 0); e != 0 {
		return fmt.Errorf("PTRACE_SETFPREGS %d: %w", pid, e)
	}
	return nil
}
