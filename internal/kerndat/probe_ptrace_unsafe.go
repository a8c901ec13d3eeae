package kerndat

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/proc"
)

// ptraceTimeout bounds the whole ptrace session; on expiry the tracee is
// killed, which ends any wait4.
const ptraceTimeout = 5 * time.Second

// probePtrace runs a ptrace session against a `sleep` child on one locked
// OS thread (ptrace requests are only accepted from the thread that
// attached), which is then retired rather than reused as a former tracer.
func probePtrace() []Feature {
	var fs []Feature
	onThrowawayThread(func() { fs = ptraceSession() })
	return fs
}

type iovec struct {
	Base uintptr
	Len  uint64
}

func ptraceSession() []Feature {
	names := []string{PtraceSeize, PtraceXstate, PtraceRseq, PtraceSuspendSeccomp, PtraceSeccompFilter}
	failAll := func(format string, args ...any) []Feature {
		fs := make([]Feature, len(names))
		for i, n := range names {
			fs[i] = missing(n, format, args...)
		}
		return withInfo(fs...)
	}

	sleep, err := findSleep()
	if err != nil {
		return failAll("no tracee: %v", err)
	}
	pid, err := syscall.ForkExec(sleep, []string{"sleep", "60"}, &syscall.ProcAttr{
		Sys: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
	})
	if err != nil {
		return failAll("no tracee: start %s: %v", sleep, err)
	}
	defer reap(pid)
	watchdog := time.AfterFunc(ptraceTimeout, func() { unix.Kill(pid, unix.SIGKILL) })
	defer watchdog.Stop()

	// Let sleep get past the dynamic loader and into nanosleep, so that the
	// rseq answer is about a settled glibc process.
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if st, err := proc.ReadStat(pid); err != nil || st.State == 'S' {
			break
		}
	}

	t0 := time.Now()
	if err := unix.PtraceSeize(pid); err != nil {
		return failAll("PTRACE_SEIZE: %v", err)
	}
	if err := unix.PtraceInterrupt(pid); err != nil {
		return failAll("PTRACE_INTERRUPT: %v", err)
	}
	ws, err := waitEventStop(pid)
	if err != nil {
		return failAll("%v", err)
	}
	seize := ok(PtraceSeize, fmt.Sprintf("event stop %#x in %v", uint32(ws), time.Since(t0).Round(time.Microsecond)))

	s, err := newScratch(4 * 4096)
	if err != nil {
		return failAll("mmap: %v", err)
	}
	defer s.free()
	return withInfo(seize, xstateFeature(pid, s), rseqFeature(pid, s), suspendSeccompFeature(pid), seccompFilterFeature(pid, s))
}

func findSleep() (string, error) {
	if p, err := exec.LookPath("sleep"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/bin/sleep", "/usr/bin/sleep"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no sleep binary in $PATH, /bin or /usr/bin")
}

// waitEventStop waits for the PTRACE_EVENT_STOP that PTRACE_INTERRUPT
// causes, passing on any signal-delivery stop that comes first.
func waitEventStop(pid int) (unix.WaitStatus, error) {
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return ws, fmt.Errorf("wait4 for the interrupt stop: %v", err)
		}
		switch {
		case ws.Exited() || ws.Signaled():
			return ws, fmt.Errorf("tracee died before the interrupt stop (status %#x)", uint32(ws))
		case !ws.Stopped():
			continue
		case uint32(ws)>>16 == unix.PTRACE_EVENT_STOP:
			return ws, nil
		default:
			if err := unix.PtraceCont(pid, int(ws.StopSignal())); err != nil {
				return ws, fmt.Errorf("PTRACE_CONT past signal %v: %v", ws.StopSignal(), err)
			}
		}
	}
}

// reap kills the tracee (tracing ends with it) and collects it.
func reap(pid int) {
	unix.Kill(pid, unix.SIGKILL)
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || ws.Exited() || ws.Signaled() {
			return
		}
	}
}

func ptrace(req int, pid int, addr, data uintptr) (uintptr, unix.Errno) {
	r, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), addr, data, 0, 0)
	return r, e
}

// xstateFeature: the kernel trims the iovec to the real XSAVE size.
func xstateFeature(pid int, s *scratch) Feature {
	const bufOff, bufLen = 4096, 3 * 4096
	iov := at[iovec](s, 0)
	*iov = iovec{Base: s.addr(bufOff), Len: bufLen}
	if _, e := ptrace(unix.PTRACE_GETREGSET, pid, unix.NT_X86_XSTATE, s.addr(0)); e != 0 {
		return missing(PtraceXstate, "PTRACE_GETREGSET NT_X86_XSTATE: %v", e)
	}
	if iov.Len == 0 || iov.Len >= bufLen {
		return missing(PtraceXstate, "PTRACE_GETREGSET NT_X86_XSTATE returned %d bytes", iov.Len)
	}
	xcr0 := *at[uint64](s, bufOff+464) // sw_reserved.xstate_bv / XCR0 (arch/x86/include/uapi/asm/sigcontext.h)
	return ok(PtraceXstate, fmt.Sprintf("%d bytes, XCR0 %#x", iov.Len, xcr0))
}

func rseqFeature(pid int, s *scratch) Feature {
	conf := at[ptraceRseqConfiguration](s, 0)
	*conf = ptraceRseqConfiguration{}
	n, e := ptrace(unix.PTRACE_GET_RSEQ_CONFIGURATION, pid, unsafe.Sizeof(*conf), s.addr(0))
	if e != 0 {
		return missing(PtraceRseq, "PTRACE_GET_RSEQ_CONFIGURATION: %v", e)
	}
	if conf.RseqAbiPointer == 0 {
		return ok(PtraceRseq, fmt.Sprintf("%d bytes; the tracee registered no rseq", n))
	}
	return ok(PtraceRseq, fmt.Sprintf("tracee rseq size %d, signature %#x", conf.RseqAbiSize, conf.Signature))
}

// suspendSeccompFeature: ptrace_setoptions (kernel/ptrace.c) returns EINVAL
// without CONFIG_SECCOMP or CONFIG_CHECKPOINT_RESTORE, EPERM without
// CAP_SYS_ADMIN or when the tracer itself is under seccomp.
func suspendSeccompFeature(pid int) Feature {
	if err := unix.PtraceSetOptions(pid, unix.PTRACE_O_SUSPEND_SECCOMP); err != nil {
		return missing(PtraceSuspendSeccomp, "PTRACE_O_SUSPEND_SECCOMP: %v", err)
	}
	unix.PtraceSetOptions(pid, 0)
	return ok(PtraceSuspendSeccomp, "PTRACE_O_SUSPEND_SECCOMP accepted")
}

// seccompFilterFeature: the tracee inherited our (absent) filter, so a
// working PTRACE_SECCOMP_GET_FILTER answers EINVAL ("no filter"); an unknown
// request would be EIO. A kernel without CONFIG_SECCOMP_FILTER also says
// EINVAL, so that is ruled out first with SECCOMP_GET_ACTION_AVAIL.
func seccompFilterFeature(pid int, s *scratch) Feature {
	*at[uint32](s, 0) = seccompRetKillProcess
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, seccompGetActionAvail, 0, s.addr(0)); e != 0 {
		return missing(PtraceSeccompFilter, "seccomp(SECCOMP_GET_ACTION_AVAIL): %v: no CONFIG_SECCOMP_FILTER", e)
	}
	n, e := ptrace(unix.PTRACE_SECCOMP_GET_FILTER, pid, 0, 0)
	switch e {
	case 0:
		return ok(PtraceSeccompFilter, fmt.Sprintf("PTRACE_SECCOMP_GET_FILTER: %d instructions", n))
	case unix.EINVAL:
		return ok(PtraceSeccompFilter, "PTRACE_SECCOMP_GET_FILTER: EINVAL on an unfiltered tracee (request known)")
	case unix.EACCES:
		return missing(PtraceSeccompFilter, "PTRACE_SECCOMP_GET_FILTER: EACCES: stasis runs under seccomp or without CAP_SYS_ADMIN")
	default:
		return missing(PtraceSeccompFilter, "PTRACE_SECCOMP_GET_FILTER: %v", e)
	}
}
