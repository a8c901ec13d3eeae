package ptrace

import (
	"fmt"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SiginfoSize is sizeof(siginfo_t) on x86_64.
const SiginfoSize = 128

// ptrace requests never block: they are raw syscalls, so that the Go
// scheduler does not hand the tracer's P to another thread on each of
// the thousands a dump makes. Pointer arguments stay unsafe.Pointer until
// the syscall expression itself: converted to uintptr earlier, a stack
// variable could move (stack growth) before the kernel writes to it.
func ptrace(req int, pid int, addr, data uintptr) error {
	_, _, e := unix.RawSyscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), addr, data, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// ptracePtr is ptrace with a pointer as data.
func ptracePtr(req int, pid int, addr uintptr, data unsafe.Pointer) error {
	_, _, e := unix.RawSyscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), addr, uintptr(data), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// ptracePtrs is ptrace with pointers as addr and data; it returns the
// request's result.
func ptracePtrs(req int, pid int, addr, data unsafe.Pointer) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), uintptr(addr), uintptr(data), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// GetRegs reads the general purpose registers of tid.
func GetRegs(tid int) (unix.PtraceRegs, error) {
	var r unix.PtraceRegs
	if err := ptracePtr(unix.PTRACE_GETREGS, tid, 0, unsafe.Pointer(&r)); err != nil {
		return r, fmt.Errorf("ptrace getregs %d: %w", tid, err)
	}
	return r, nil
}

// SetRegs writes the general purpose registers of tid.
func SetRegs(tid int, r *unix.PtraceRegs) error {
	if err := ptracePtr(unix.PTRACE_SETREGS, tid, 0, unsafe.Pointer(r)); err != nil {
		return fmt.Errorf("ptrace setregs %d: %w", tid, err)
	}
	return nil
}

// GetXState returns the task's XSAVE area in the standard (non-compacted)
// user ABI layout. The kernel trims the buffer to the CPU's size.
func GetXState(tid int) ([]byte, error) {
	// The kernel's buffer is read into a reused one and copied out at
	// its size (~1-3 KiB): a dump of 10,000 threads allocated and
	// zeroed 16 KiB for each.
	bp := xstateBufs.Get().(*[]byte)
	defer xstateBufs.Put(bp)
	buf := *bp
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	if err := ptracePtr(unix.PTRACE_GETREGSET, tid, unix.NT_X86_XSTATE, unsafe.Pointer(&iov)); err != nil {
		return nil, fmt.Errorf("ptrace getregset xstate %d: %w", tid, err)
	}
	return append([]byte(nil), buf[:iov.Len]...), nil
}

var xstateBufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// SetXState writes an XSAVE area obtained from GetXState (possibly edited).
func SetXState(tid int, buf []byte) error {
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	if err := ptracePtr(unix.PTRACE_SETREGSET, tid, unix.NT_X86_XSTATE, unsafe.Pointer(&iov)); err != nil {
		return fmt.Errorf("ptrace setregset xstate %d: %w", tid, err)
	}
	return nil
}

// GetSigmask returns the blocked signal mask of tid (bit n-1 = signal n).
func GetSigmask(tid int) (uint64, error) {
	var m uint64
	if err := ptracePtr(unix.PTRACE_GETSIGMASK, tid, 8, unsafe.Pointer(&m)); err != nil {
		return 0, fmt.Errorf("ptrace getsigmask %d: %w", tid, err)
	}
	return m, nil
}

// SetSigmask replaces the blocked signal mask of tid.
func SetSigmask(tid int, m uint64) error {
	if err := ptracePtr(unix.PTRACE_SETSIGMASK, tid, 8, unsafe.Pointer(&m)); err != nil {
		return fmt.Errorf("ptrace setsigmask %d: %w", tid, err)
	}
	return nil
}

// PeekSiginfo returns the queued signals of tid without dequeuing them:
// the thread's private queue, or the process-wide one if shared.
func PeekSiginfo(tid int, shared bool) ([][]byte, error) {
	type peekArgs struct {
		off   uint64
		flags uint32
		nr    int32
	}
	var out [][]byte
	buf := make([]byte, 32*SiginfoSize)
	for {
		a := peekArgs{off: uint64(len(out)), nr: 32}
		if shared {
			a.flags = unix.PTRACE_PEEKSIGINFO_SHARED
		}
		n, err := ptracePtrs(unix.PTRACE_PEEKSIGINFO, tid, unsafe.Pointer(&a), unsafe.Pointer(&buf[0]))
		if err != nil {
			return nil, fmt.Errorf("ptrace peeksiginfo %d: %w", tid, err)
		}
		if n == 0 {
			return out, nil
		}
		for i := 0; i < n; i++ {
			out = append(out, append([]byte(nil), buf[i*SiginfoSize:(i+1)*SiginfoSize]...))
		}
	}
}

// RseqConfig is the rseq registration of a thread
// (struct ptrace_rseq_configuration).
type RseqConfig struct {
	Pointer   uint64
	Size      uint32
	Signature uint32
	Flags     uint32
	_         uint32
}

// GetRseqConfig returns the rseq area registered by tid (Pointer 0: none).
func GetRseqConfig(tid int) (RseqConfig, error) {
	var c RseqConfig
	if err := ptracePtr(unix.PTRACE_GET_RSEQ_CONFIGURATION, tid, unsafe.Sizeof(c), unsafe.Pointer(&c)); err != nil {
		return c, fmt.Errorf("ptrace get_rseq_configuration %d: %w", tid, err)
	}
	return c, nil
}

// Seize attaches to tid without stopping it.
func Seize(tid int, options int) error {
	if err := ptrace(unix.PTRACE_SEIZE, tid, 0, uintptr(options)); err != nil {
		return fmt.Errorf("ptrace seize %d: %w", tid, err)
	}
	return nil
}

// Interrupt asks a seized tid to enter a group-stop-like event stop.
func Interrupt(tid int) error {
	if err := ptrace(unix.PTRACE_INTERRUPT, tid, 0, 0); err != nil {
		return fmt.Errorf("ptrace interrupt %d: %w", tid, err)
	}
	return nil
}

// Detach lets tid run on, delivering sig (0 for none).
func Detach(tid int, sig int) error {
	if err := ptrace(unix.PTRACE_DETACH, tid, 0, uintptr(sig)); err != nil {
		return fmt.Errorf("ptrace detach %d: %w", tid, err)
	}
	return nil
}

// SetOptions sets PTRACE_O_* options of tid.
func SetOptions(tid int, options int) error {
	if err := ptrace(unix.PTRACE_SETOPTIONS, tid, 0, uintptr(options)); err != nil {
		return fmt.Errorf("ptrace setoptions %d: %w", tid, err)
	}
	return nil
}

func singleStep(tid int, sig int) error {
	if err := ptrace(unix.PTRACE_SINGLESTEP, tid, 0, uintptr(sig)); err != nil {
		return fmt.Errorf("ptrace singlestep %d: %w", tid, err)
	}
	return nil
}

// syscallResume resumes tid until its next syscall entry or exit stop.
func syscallResume(tid int, sig int) error {
	if err := ptrace(unix.PTRACE_SYSCALL, tid, 0, uintptr(sig)); err != nil {
		return fmt.Errorf("ptrace syscall %d: %w", tid, err)
	}
	return nil
}

// Cont resumes tid, delivering sig (0 for none).
func Cont(tid int, sig int) error {
	if err := ptrace(unix.PTRACE_CONT, tid, 0, uintptr(sig)); err != nil {
		return fmt.Errorf("ptrace cont %d: %w", tid, err)
	}
	return nil
}

// GetEventMsg returns the message of the last ptrace event stop of tid
// (the new pid for PTRACE_EVENT_FORK/CLONE).
func GetEventMsg(tid int) (uint64, error) {
	var m uint64
	if err := ptracePtr(unix.PTRACE_GETEVENTMSG, tid, 0, unsafe.Pointer(&m)); err != nil {
		return 0, fmt.Errorf("ptrace geteventmsg %d: %w", tid, err)
	}
	return m, nil
}

// SeccompFilter reads the classic BPF program of filter i of tid into buf
// (PTRACE_SECCOMP_GET_FILTER; 0 is the newest filter) and returns its
// number of instructions; an empty buf asks only for that number.
func SeccompFilter(tid, i int, buf []byte) (int, error) {
	var p unsafe.Pointer
	if len(buf) > 0 {
		p = unsafe.Pointer(&buf[0])
	}
	n, err := ptracePtr2(unix.PTRACE_SECCOMP_GET_FILTER, tid, uintptr(i), p)
	if err != nil {
		return 0, fmt.Errorf("ptrace seccomp_get_filter %d of %d: %w", i, tid, err)
	}
	return n, nil
}

// SeccompMetadata is struct seccomp_metadata (include/uapi/linux/ptrace.h).
type SeccompMetadata struct {
	FilterOff uint64 // the filter asked about, 0 the newest
	Flags     uint64 // SECCOMP_FILTER_FLAG_* it was installed with
}

// GetSeccompMetadata returns the flags filter i of tid was installed with
// (PTRACE_SECCOMP_GET_METADATA).
func GetSeccompMetadata(tid, i int) (SeccompMetadata, error) {
	md := SeccompMetadata{FilterOff: uint64(i)}
	if _, err := ptracePtr2(unix.PTRACE_SECCOMP_GET_METADATA, tid, unsafe.Sizeof(md), unsafe.Pointer(&md)); err != nil {
		return md, fmt.Errorf("ptrace seccomp_get_metadata %d of %d: %w", i, tid, err)
	}
	return md, nil
}

// ptracePtr2 is ptracePtr that returns the request's result.
func ptracePtr2(req int, pid int, addr uintptr, data unsafe.Pointer) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), addr, uintptr(data), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}
