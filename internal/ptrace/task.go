package ptrace

import (
	"errors"
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/proc"
)

// Stop describes why a tracee stopped.
type Stop struct {
	Signal unix.Signal // stop signal (SIGTRAP for traps and events)
	Event  int         // PTRACE_EVENT_* in status>>16, 0 for none
}

// Wait waits for tid to stop and reports the stop. A tracee that exits or
// is killed instead yields ErrExited.
func Wait(tid int) (Stop, error) {
	var ws unix.WaitStatus
	if _, err := linux.RawWait4(tid, &ws, unix.WALL); err != nil {
		return Stop{}, fmt.Errorf("wait for tid %d: %w", tid, err)
	}
	switch {
	case ws.Exited():
		return Stop{}, fmt.Errorf("pid %d exited with status %d: %w", tid, ws.ExitStatus(), ErrExited)
	case ws.Signaled():
		return Stop{}, fmt.Errorf("pid %d killed by %v: %w", tid, ws.Signal(), ErrExited)
	case ws.Stopped():
		return Stop{Signal: ws.StopSignal(), Event: int(ws) >> 16}, nil
	}
	return Stop{}, fmt.Errorf("wait4 %d: unexpected status %#x", tid, int(ws))
}

// eventStop is PTRACE_EVENT_STOP: the stop PTRACE_INTERRUPT and group
// stops produce for a seized tracee.
const eventStop = 128

// Task is one stopped tracee thread into which system calls can be
// injected. Base holds the registers every injection starts from: the
// task's own registers at the stop, so that nothing else changes.
type Task struct {
	Tid    int
	Leader int // thread group id (the pid), 0 if Tid is the leader
	// NsTid and NsLeader are the ids as the task sees them, in its own pid
	// namespace, for the injected calls that take ids; 0 means the same as
	// Tid and Leader (the task is in stasis' pid namespace).
	NsTid, NsLeader int
	SyscallIP       uint64          // address of a `syscall` instruction in the tracee
	Base            unix.PtraceRegs // registers at the stop, restored by Restore
	// Signals that arrived (and were dequeued) while stasis held the task;
	// they are delivered again when the task is let go.
	Signals []unix.Signal
	// Forked holds pids reported by PTRACE_EVENT_FORK/CLONE during the last
	// injected call (the puppet's clone3).
	Forked []int
	// Blocked is the task's own signal mask at the seize (seized tasks).
	Blocked uint64
	// NoSeq makes EachSeq run this task's calls one injection each: its
	// process ignores SIGTRAP (the trap of SeqCode would reset that) or
	// has one pending (the trap would merge with it). TrapCaught says
	// that the process has a SIGTRAP handler (see EachSeq).
	NoSeq, TrapCaught bool

	// seized marks a task of someone else's tree (SeizeAndStop): stasis
	// must be able to die at any moment without harming it, so calls are
	// injected in a way that leaves nothing behind (see syscallSeized).
	seized bool
	// trapQueued marks a task of the restore into which stasis queued a
	// SIGTRAP: it is no longer single-stepped (see syscallTrapQueued).
	trapQueued bool
	// tracer is the OS thread that attached the task, the only one whose
	// ptrace requests the kernel accepts for it (see Syscall).
	tracer int
}

// Tgid returns the pid of the process the thread belongs to.
func (t *Task) Tgid() int {
	if t.Leader != 0 {
		return t.Leader
	}
	return t.Tid
}

// VTid is the thread's id in its own pid namespace.
func (t *Task) VTid() int {
	if t.NsTid != 0 {
		return t.NsTid
	}
	return t.Tid
}

// VTgid is the process's pid in its own pid namespace.
func (t *Task) VTgid() int {
	if t.NsLeader != 0 {
		return t.NsLeader
	}
	if t.NsTid != 0 && t.Leader == 0 {
		return t.NsTid
	}
	return t.Tgid()
}

// SeizeAndStop attaches to tid and brings it into a ptrace stop. It returns
// the stop signal: a task that was already group-stopped reports the
// signal that stopped it (SIGSTOP, SIGTSTP, ...), otherwise SIGTRAP.
//
// A thread under seccomp is seized with PTRACE_O_SUSPEND_SECCOMP: its
// filter must not see (and may deny or kill on) the calls stasis injects.
func SeizeAndStop(tid int) (*Task, unix.Signal, error) {
	if err := SeizeInterrupt(tid); err != nil {
		return nil, 0, err
	}
	return StopSeized(tid)
}

// SeizeInterrupt attaches to tid and asks it to stop, without waiting
// for the stop: a task in a frozen cgroup v1 only stops once thawed
// (--freeze-cgroup seizes the whole cgroup so, then thaws it). StopSeized
// waits for the stop.
func SeizeInterrupt(tid int) error {
	if err := seize(tid); err != nil {
		return err
	}
	if err := Interrupt(tid); err != nil {
		_ = Detach(tid, 0)
		return err
	}
	return nil
}

// suspendRefused records that the kernel refused PTRACE_O_SUSPEND_SECCOMP
// to stasis (it needs CAP_SYS_ADMIN, a kernel with
// CONFIG_CHECKPOINT_RESTORE, a tracer under no seccomp filter itself).
var suspendRefused atomic.Bool

// seize attaches to tid with PTRACE_O_SUSPEND_SECCOMP where the kernel
// allows it: the option changes nothing for a thread under no filter,
// and asking for it at once spares reading /proc/TID/status (which
// says whether the thread has one) for every thread of a big process.
// Where it is refused, only threads under seccomp ask for it, and their
// seize fails saying why.
func seize(tid int) error {
	const opts = unix.PTRACE_O_TRACESYSGOOD
	if !suspendRefused.Load() {
		err := Seize(tid, opts|unix.PTRACE_O_SUSPEND_SECCOMP)
		if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EINVAL) {
			return err
		}
		// The option refused, or the thread not attachable: without
		// the option, the thread tells which.
		if err := seizeChecked(tid, opts); err != nil {
			return err
		}
		suspendRefused.Store(true)
		return nil
	}
	return seizeChecked(tid, opts)
}

// seizeChecked attaches to tid, with PTRACE_O_SUSPEND_SECCOMP only if
// the thread is under seccomp.
func seizeChecked(tid int, opts int) error {
	seccomp := underSeccomp(tid)
	if seccomp {
		opts |= unix.PTRACE_O_SUSPEND_SECCOMP
	}
	if err := Seize(tid, opts); err != nil {
		if seccomp && errors.Is(err, unix.EPERM) {
			// The kernel wants CAP_SYS_ADMIN for this option alone.
			return fmt.Errorf("tid %d is under seccomp: its filter is suspended with PTRACE_O_SUSPEND_SECCOMP, which needs CAP_SYS_ADMIN: %w", tid, err)
		}
		return err
	}
	return nil
}

// StopSeized waits for tid, seized and interrupted by SeizeInterrupt,
// to stop, as SeizeAndStop does.
func StopSeized(tid int) (*Task, unix.Signal, error) {
	t := &Task{Tid: tid, seized: true, tracer: unix.Gettid()}
	for {
		st, err := Wait(tid)
		if err != nil {
			return nil, 0, err
		}
		if st.Event == eventStop {
			regs, err := GetRegs(tid)
			if err != nil {
				_ = Detach(tid, 0)
				return nil, 0, err
			}
			t.Base = regs
			if t.Blocked, err = GetSigmask(tid); err != nil {
				_ = Detach(tid, 0)
				return nil, 0, err
			}
			return t, st.Signal, nil
		}
		// A signal-delivery stop that came before the interrupt: the
		// signal is dequeued now; remember it and go on to the event stop.
		t.Signals = append(t.Signals, st.Signal)
		if err := Cont(tid, 0); err != nil {
			return nil, 0, err
		}
	}
}

// Attached wraps a tracee that is already in a ptrace stop (a fresh child
// auto-attached through PTRACE_O_TRACEFORK, or the exec stop of a
// PTRACE_TRACEME child). It must be called on the tracer's thread, which
// the task's later calls must come from too.
func Attached(tid int, syscallIP uint64) (*Task, error) {
	regs, err := GetRegs(tid)
	if err != nil {
		return nil, err
	}
	return &Task{Tid: tid, SyscallIP: syscallIP, Base: regs, tracer: unix.Gettid()}, nil
}

// Syscall injects system call nr with up to six arguments into the stopped
// task and returns its raw result. Errors from the call itself come back as
// unix.Errno; other errors mean the injection failed.
//
// A task seized by a dump is driven with PTRACE_SYSCALL and left, as soon
// as the call has returned, in a state that a detach by the tracer's death
// cannot hurt (syscallSeized). A task of the restore (the puppet and what
// it creates, killed with stasis by PTRACE_O_EXITKILL) is single-stepped:
// one round trip instead of two.
//
// It must run on the thread that attached the task (see the package
// doc); from any other, it fails with an error wrapping ErrNotTracer
// before it touches the task.
func (t *Task) Syscall(nr uintptr, args ...uint64) (uint64, error) {
	if t.SyscallIP == 0 {
		return 0, fmt.Errorf("inject syscall %d into %d: no syscall instruction known", nr, t.Tid)
	}
	if err := t.onTracer(); err != nil {
		return 0, fmt.Errorf("inject syscall %d into %d: %w", nr, t.Tid, err)
	}
	regs := t.injected(nr, args)
	if t.seized {
		return t.syscallSeized(nr, &regs)
	}
	if t.trapQueued || queuesTrap(nr, args) {
		return t.syscallTrapQueued(nr, &regs)
	}
	if err := SetRegs(t.Tid, &regs); err != nil {
		return 0, err
	}
	t.Forked = t.Forked[:0]
	for {
		if err := singleStep(t.Tid, 0); err != nil {
			return 0, err
		}
		st, err := Wait(t.Tid)
		if err != nil {
			return 0, fmt.Errorf("inject syscall %d: %w", nr, err)
		}
		switch {
		case st.Signal == unix.SIGTRAP && st.Event == 0:
			out, err := GetRegs(t.Tid)
			if err != nil {
				return 0, err
			}
			return t.result(nr, &out)
		case st.Event == unix.PTRACE_EVENT_FORK || st.Event == unix.PTRACE_EVENT_CLONE || st.Event == unix.PTRACE_EVENT_VFORK:
			// The trap is reported before the call returns: record the
			// new task and step again to finish the call.
			msg, err := GetEventMsg(t.Tid)
			if err != nil {
				return 0, err
			}
			t.Forked = append(t.Forked, int(msg))
		case st.Event != 0:
			// An event stop (group stop of a seized task): nothing to
			// deliver, step on.
		default:
			t.Signals = append(t.Signals, st.Signal)
		}
	}
}

// onTracer checks that the caller runs on the task's tracer thread. The
// kernel answers a request from any other thread with ESRCH, as if the
// task were gone, which would send a caller after the wrong cause; a
// wait4 from another thread of the process, allowed, would steal the
// tracer's stops.
func (t *Task) onTracer() error {
	if t.tracer == 0 {
		return nil
	}
	if tid := unix.Gettid(); tid != t.tracer {
		return fmt.Errorf("called on thread %d, but thread %d attached it: %w", tid, t.tracer, ErrNotTracer)
	}
	return nil
}

// injected returns the registers that make the task call nr with args
// from the syscall instruction at SyscallIP.
func (t *Task) injected(nr uintptr, args []uint64) unix.PtraceRegs {
	regs := t.Base
	regs.Rip = t.SyscallIP
	regs.Rax = uint64(nr)
	// orig_rax = -1 keeps the kernel's syscall-restart logic off the
	// injected call, whatever the task was doing when it stopped.
	regs.Orig_rax = ^uint64(0)
	a := [6]uint64{}
	copy(a[:], args)
	regs.Rdi, regs.Rsi, regs.Rdx, regs.R10, regs.R8, regs.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
	return regs
}

// syscallSeized injects a call into a seized task without single-stepping:
// PTRACE_SYSCALL to the call's entry stop, again to its exit stop. A
// single-step would leave TIF_SINGLESTEP set, which only an explicit
// PTRACE_DETACH clears: a task whose tracer dies keeps the trap flag and
// dies of SIGTRAP after its next instruction. The step's SIGTRAP, forced
// through a blocked mask, also resets a SIGTRAP handler to SIG_DFL.
//
// Every signal is blocked from the moment the task gets the injected
// registers until the call's entry stop: a signal is dequeued only on the
// way back to user mode, which the task takes once, from its current stop
// to the syscall instruction; none must be delivered into (or lost with)
// the injected registers. Once the call is entered, the mask is the
// task's own again, so a stasis killed during the call (when scheduling
// is slow, the longest part) leaves no signal blocked. Signals that come
// meanwhile stay queued with their siginfo and are delivered when the
// task runs on.
//
// At the exit stop the task gets back its own registers and mask. A
// detach from there, explicit or by the tracer's death, is as harmless
// as from the interrupt stop: __ptrace_unlink wakes the task with
// TIF_SIGPENDING set, so on its way out of the syscall-exit stop it goes
// through the signal path, which restarts the system call it was
// interrupted in (arch_do_signal_or_restart) with the kernel's own rules.
// The stop's exit code (SIGTRAP|0x80 with PTRACE_O_TRACESYSGOOD) is not a
// valid signal, so nothing is sent to the task. A resume that is not a
// detach (PTRACE_SYSCALL, PTRACE_CONT) would not restart the call, but
// stasis resumes a seized task only into another injected call.
func (t *Task) syscallSeized(nr uintptr, regs *unix.PtraceRegs) (uint64, error) {
	if err := t.blockAll(); err != nil {
		return 0, err
	}
	if err := SetRegs(t.Tid, regs); err != nil {
		return 0, errors.Join(err, t.putBack())
	}
	for stop := 0; stop < 2; stop++ { // the call's entry, then exit stop
		if err := t.toSyscallStop(); err != nil {
			if errors.Is(err, ErrExited) {
				return 0, fmt.Errorf("inject syscall %d: %w", nr, err)
			}
			return 0, errors.Join(fmt.Errorf("inject syscall %d: %w", nr, err), t.putBack())
		}
		// Entered: the call runs to its exit stop, which comes before
		// the exit to user mode where signals are taken. The calls a
		// dump injects do not wait, so a pending signal cannot cut them
		// short either.
		if stop == 0 {
			if err := t.unblock(); err != nil {
				return 0, errors.Join(err, t.putBack())
			}
		}
	}
	out, err := GetRegs(t.Tid)
	if perr := SetRegs(t.Tid, &t.Base); perr != nil {
		return 0, errors.Join(err, perr)
	}
	if err != nil {
		return 0, err
	}
	return t.result(nr, &out)
}

// queuesTrap reports whether call nr with args queues a SIGTRAP to the
// task itself (a pending SIGTRAP of the image being restored).
func queuesTrap(nr uintptr, args []uint64) bool {
	switch {
	case nr == unix.SYS_RT_SIGQUEUEINFO && len(args) > 1:
		return args[1] == uint64(unix.SIGTRAP)
	case nr == unix.SYS_RT_TGSIGQUEUEINFO && len(args) > 2:
		return args[2] == uint64(unix.SIGTRAP)
	}
	return false
}

// syscallTrapQueued injects a call into a task of the restore that has,
// or is about to have, a SIGTRAP pending, with PTRACE_SYSCALL to the
// call's entry and exit stops. A single step's trap would be merged
// with the pending SIGTRAP (one non-realtime signal is queued once),
// unblock it, and be reported with its siginfo: the step would take the
// task's signal away. SIGTRAP stays blocked until the restore sets the
// task's own mask at the end.
func (t *Task) syscallTrapQueued(nr uintptr, regs *unix.PtraceRegs) (uint64, error) {
	if !t.trapQueued {
		m, err := GetSigmask(t.Tid)
		if err != nil {
			return 0, err
		}
		if err := SetSigmask(t.Tid, m|1<<(unix.SIGTRAP-1)); err != nil {
			return 0, err
		}
		t.trapQueued = true
	}
	if err := SetRegs(t.Tid, regs); err != nil {
		return 0, err
	}
	t.Forked = t.Forked[:0]
	for stop := 0; stop < 2; stop++ { // the call's entry, then exit stop
		if err := t.toSyscallStop(); err != nil {
			return 0, fmt.Errorf("inject syscall %d: %w", nr, err)
		}
	}
	out, err := GetRegs(t.Tid)
	if err != nil {
		return 0, err
	}
	return t.result(nr, &out)
}

// result is what the injected call nr returned, from the registers of the
// stop after it: an error is an unix.Errno.
func (t *Task) result(nr uintptr, out *unix.PtraceRegs) (uint64, error) {
	if out.Rip != t.SyscallIP+2 {
		return 0, fmt.Errorf("inject syscall %d into %d: stopped at %#x, not after the syscall", nr, t.Tid, out.Rip)
	}
	if r := int64(out.Rax); r < 0 && r >= -4095 {
		return out.Rax, unix.Errno(-r)
	}
	return out.Rax, nil
}

// sysStop is the stop signal of a syscall stop with PTRACE_O_TRACESYSGOOD.
const sysStop = unix.SIGTRAP | 0x80

// toSyscallStop resumes the task with PTRACE_SYSCALL until its next
// syscall stop. An event stop (a group stop begun meanwhile) is stepped
// over; a signal-delivery stop (SIGSTOP, which no mask blocks) is
// remembered and suppressed, to be sent again when the task is let go.
func (t *Task) toSyscallStop() error {
	for {
		if err := syscallResume(t.Tid, 0); err != nil {
			return err
		}
		st, err := Wait(t.Tid)
		if err != nil {
			return err
		}
		switch {
		case st.Signal == sysStop:
			return nil
		case st.Event != 0:
		default:
			t.Signals = append(t.Signals, st.Signal)
		}
	}
}

// blockAll blocks every signal of a seized task for an injected call,
// and unblock gives it back its own mask once the call is entered
// (syscallSeized says why). A task that blocks every signal it can
// already (a thread of a pool often does) needs neither request: the
// kernel never blocks SIGKILL and SIGSTOP, whatever the mask asks.
func (t *Task) blockAll() error {
	if t.Blocked|unblockable == ^uint64(0) {
		return nil
	}
	return SetSigmask(t.Tid, ^uint64(0))
}

func (t *Task) unblock() error {
	if t.Blocked|unblockable == ^uint64(0) {
		return nil
	}
	return SetSigmask(t.Tid, t.Blocked)
}

// unblockable are the bits of SIGKILL and SIGSTOP in a signal mask.
const unblockable = 1<<(unix.SIGKILL-1) | 1<<(unix.SIGSTOP-1)

// putBack gives the task its registers and signal mask of the seize.
func (t *Task) putBack() error {
	return errors.Join(SetRegs(t.Tid, &t.Base), SetSigmask(t.Tid, t.Blocked))
}

// Call is Syscall for calls whose result must be non-negative; the error
// names the call.
func (t *Task) Call(name string, nr uintptr, args ...uint64) (uint64, error) {
	r, err := t.Syscall(nr, args...)
	if err != nil {
		return 0, fmt.Errorf("%s in pid %d: %w", name, t.Tid, err)
	}
	return r, nil
}

// Open opens path in the task (openat from its cwd), the path written at
// the start of scratch s, and returns the new fd's number there.
func (t *Task) Open(s *Scratch, path string, flags int) (uint64, error) {
	p, err := s.Put(0, append([]byte(path), 0))
	if err != nil {
		return 0, err
	}
	const atFdcwd = ^uint64(99) // AT_FDCWD, -100
	return t.Call("openat("+path+")", unix.SYS_OPENAT, atFdcwd, p, uint64(flags), 0)
}

// Restore puts the registers of the stop back.
func (t *Task) Restore() error { return SetRegs(t.Tid, &t.Base) }

// FindSyscallInsn returns the address of a `syscall` (0f 05) byte pair in
// the given range of the task's memory (its [vdso] always has one), an
// error wrapping ErrNoSyscallInsn if there is none.
func FindSyscallInsn(pid int, start, end uint64) (uint64, error) {
	buf := make([]byte, end-start)
	if err := ReadMem(pid, start, buf); err != nil {
		return 0, fmt.Errorf("read vdso of pid %d: %w", pid, err)
	}
	for i := 0; i+1 < len(buf); i++ {
		if buf[i] == 0x0f && buf[i+1] == 0x05 {
			return start + uint64(i), nil
		}
	}
	return 0, fmt.Errorf("%#x-%#x of pid %d: %w", start, end, pid, ErrNoSyscallInsn)
}

// InjectExit makes the stopped thread t call exit_group(code) and waits
// until the tracer has seen it exit. The task then stays a zombie for its
// real parent to reap.
func InjectExit(t *Task, code uint64) error {
	regs := t.Base
	regs.Rip = t.SyscallIP
	regs.Rax = unix.SYS_EXIT_GROUP
	regs.Orig_rax = ^uint64(0)
	regs.Rdi = code
	if err := SetRegs(t.Tid, &regs); err != nil {
		return err
	}
	return ContUntilExit(t.Tid, 0)
}

// ContUntilExit resumes tid (delivering sig) until it exits.
func ContUntilExit(tid int, sig unix.Signal) error {
	for {
		if err := Cont(tid, int(sig)); err != nil {
			return err
		}
		st, err := Wait(tid)
		if errors.Is(err, ErrExited) {
			return nil
		}
		if err != nil {
			return err
		}
		// A fatal signal comes back as its delivery stop first; deliver it.
		sig = 0
		if st.Event == 0 && st.Signal != unix.SIGTRAP && st.Signal != unix.SIGSTOP {
			sig = st.Signal
		}
	}
}

// underSeccomp reports whether the thread runs under seccomp.
func underSeccomp(tid int) bool {
	st, err := proc.ReadStatus(tid)
	return err == nil && st.Seccomp != 0
}

// InjectExec makes the stopped thread t call execve(path, argv, envp) with
// pointers into its memory, and returns once the new program is loaded
// and stopped at its first instruction (the SIGTRAP a traced exec sends).
func InjectExec(t *Task, path, argv, envp uint64) error {
	regs := t.Base
	regs.Rip = t.SyscallIP
	regs.Rax = unix.SYS_EXECVE
	regs.Orig_rax = ^uint64(0)
	regs.Rdi, regs.Rsi, regs.Rdx = path, argv, envp
	if err := SetRegs(t.Tid, &regs); err != nil {
		return err
	}
	if err := Cont(t.Tid, 0); err != nil {
		return err
	}
	for {
		st, err := Wait(t.Tid)
		if err != nil {
			return fmt.Errorf("exec in pid %d: %w", t.Tid, err)
		}
		if st.Signal == unix.SIGTRAP {
			r, err := GetRegs(t.Tid)
			if err != nil {
				return err
			}
			if r.Rip == t.SyscallIP+2 && int64(r.Rax) < 0 {
				return fmt.Errorf("exec in pid %d: %w", t.Tid, unix.Errno(-int64(r.Rax)))
			}
			return nil
		}
		if err := Cont(t.Tid, 0); err != nil {
			return err
		}
	}
}
