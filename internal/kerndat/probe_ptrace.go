package kerndat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

// ptraceTimeout bounds the whole ptrace session; on expiry the tracee is
// killed, which ends any wait4.
const ptraceTimeout = 5 * time.Second

// probePtrace runs a ptrace session against a `sleep` child with the
// engine's own primitives (internal/ptrace), on a thread of its own
// (ptrace.RunLocked: requests are only accepted from the thread that
// attached, and that thread is retired afterwards rather than reused as a
// former tracer).
func probePtrace() []Feature {
	var fs []Feature
	ptrace.RunLocked(func() error { fs = ptraceSession(); return nil })
	return fs
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

	// The dump's own seize: PTRACE_SEIZE, PTRACE_INTERRUPT, wait for the
	// event stop (passing on signal stops), registers and mask.
	t0 := time.Now()
	_, sig, err := ptrace.SeizeAndStop(pid)
	if err != nil {
		return failAll("%v", err)
	}
	seize := ok(PtraceSeize, fmt.Sprintf("PTRACE_EVENT_STOP (%s) in %v", unix.SignalName(sig), time.Since(t0).Round(time.Microsecond)))
	return withInfo(seize, xstateFeature(pid), rseqFeature(pid), suspendSeccompFeature(pid), seccompFilterFeature(pid))
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

// reap kills the tracee (tracing ends with it) and collects it.
func reap(pid int) {
	unix.Kill(pid, unix.SIGKILL)
	for {
		// Stops that were pending come first; the error is its exit.
		if _, err := ptrace.Wait(pid); err != nil {
			return
		}
	}
}

// xstateFeature: the kernel trims the buffer to the real XSAVE size.
func xstateFeature(pid int) Feature {
	buf, err := ptrace.GetXState(pid)
	if err != nil {
		return missing(PtraceXstate, "%v", err)
	}
	if len(buf) <= xcr0Off+8 {
		return missing(PtraceXstate, "PTRACE_GETREGSET NT_X86_XSTATE returned %d bytes", len(buf))
	}
	xcr0 := binary.LittleEndian.Uint64(buf[xcr0Off:])
	return ok(PtraceXstate, fmt.Sprintf("%d bytes, XCR0 %#x", len(buf), xcr0))
}

// xcr0Off is where XCR0 is in an XSAVE area: sw_reserved.xstate_bv
// (arch/x86/include/uapi/asm/sigcontext.h).
const xcr0Off = 464

func rseqFeature(pid int) Feature {
	conf, err := ptrace.GetRseqConfig(pid)
	if err != nil {
		return missing(PtraceRseq, "%v", err)
	}
	if conf.Pointer == 0 {
		return ok(PtraceRseq, "the tracee registered no rseq")
	}
	return ok(PtraceRseq, fmt.Sprintf("tracee rseq size %d, signature %#x", conf.Size, conf.Signature))
}

// suspendSeccompFeature: ptrace_setoptions (kernel/ptrace.c) returns EINVAL
// without CONFIG_SECCOMP or CONFIG_CHECKPOINT_RESTORE, EPERM without
// CAP_SYS_ADMIN or when the tracer itself is under seccomp.
func suspendSeccompFeature(pid int) Feature {
	if err := ptrace.SetOptions(pid, unix.PTRACE_O_SUSPEND_SECCOMP); err != nil {
		return missing(PtraceSuspendSeccomp, "PTRACE_O_SUSPEND_SECCOMP: %v", errors.Unwrap(err))
	}
	ptrace.SetOptions(pid, 0)
	return ok(PtraceSuspendSeccomp, "PTRACE_O_SUSPEND_SECCOMP accepted")
}

// seccompFilterFeature: the tracee inherited our (absent) filter, so a
// working PTRACE_SECCOMP_GET_FILTER answers EINVAL ("no filter"); an unknown
// request would be EIO. A kernel without CONFIG_SECCOMP_FILTER also says
// EINVAL, so that is ruled out first with SECCOMP_GET_ACTION_AVAIL.
func seccompFilterFeature(pid int) Feature {
	if err := seccompActionAvail(unix.SECCOMP_RET_KILL_PROCESS); err != nil {
		return missing(PtraceSeccompFilter, "seccomp(SECCOMP_GET_ACTION_AVAIL): %v: no CONFIG_SECCOMP_FILTER", err)
	}
	n, err := ptrace.SeccompFilter(pid, 0, nil)
	switch {
	case err == nil:
		return ok(PtraceSeccompFilter, fmt.Sprintf("PTRACE_SECCOMP_GET_FILTER: %d instructions", n))
	case errors.Is(err, unix.EINVAL):
		return ok(PtraceSeccompFilter, "PTRACE_SECCOMP_GET_FILTER: EINVAL on an unfiltered tracee (request known)")
	case errors.Is(err, unix.EACCES):
		return missing(PtraceSeccompFilter, "PTRACE_SECCOMP_GET_FILTER: EACCES: stasis runs under seccomp or without CAP_SYS_ADMIN")
	default:
		return missing(PtraceSeccompFilter, "PTRACE_SECCOMP_GET_FILTER: %v", errors.Unwrap(err))
	}
}

// seccompActionAvail asks seccomp(SECCOMP_GET_ACTION_AVAIL) whether the
// kernel knows action.
func seccompActionAvail(action uint32) error {
	s, err := newScratch(4096)
	if err != nil {
		return err
	}
	defer s.free()
	*at[uint32](s, 0) = action
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_ACTION_AVAIL, 0, s.addr(0)); e != 0 {
		return e
	}
	return nil
}
