package ptrace

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// SeqCode is the machine code that runs a table of system calls inside a
// task in one go: rbx points at the table, r12 holds its number of
// entries. Each entry is SeqEntrySize bytes, {nr, a0, ..., a5, result};
// the code makes every call in order, writes each call's raw rax into its
// entry, then traps (int3) with rax = getpid's number, and the syscall
// instruction after the trap is a harmless call for the tracer to end on
// (see EachSeq). It uses no stack.
//
//	loop: test r12,r12; je done
//	      mov rax,[rbx]; mov rdi,[rbx+8]; mov rsi,[rbx+16]; mov rdx,[rbx+24]
//	      mov r10,[rbx+32]; mov r8,[rbx+40]; mov r9,[rbx+48]
//	      syscall; mov [rbx+56],rax; add rbx,64; dec r12; jmp loop
//	done: mov eax,39; int3; syscall
var SeqCode = []byte{
	0x4d, 0x85, 0xe4, // test r12,r12
	0x74, 0x2a, // je done
	0x48, 0x8b, 0x03, // mov rax,[rbx]
	0x48, 0x8b, 0x7b, 0x08, // mov rdi,[rbx+8]
	0x48, 0x8b, 0x73, 0x10, // mov rsi,[rbx+16]
	0x48, 0x8b, 0x53, 0x18, // mov rdx,[rbx+24]
	0x4c, 0x8b, 0x53, 0x20, // mov r10,[rbx+32]
	0x4c, 0x8b, 0x43, 0x28, // mov r8,[rbx+40]
	0x4c, 0x8b, 0x4b, 0x30, // mov r9,[rbx+48]
	0x0f, 0x05, // syscall
	0x48, 0x89, 0x43, 0x38, // mov [rbx+56],rax
	0x48, 0x83, 0xc3, 0x40, // add rbx,64
	0x49, 0xff, 0xcc, // dec r12
	0xeb, 0xd1, // jmp loop
	0xb8, 0x27, 0x00, 0x00, 0x00, // done: mov eax,SYS_getpid
	0xcc,       // int3
	0x0f, 0x05, // syscall
}

const (
	// SeqEntrySize is the size of one entry of a call table.
	SeqEntrySize = 64
	// seqTrap is the offset in SeqCode just after its int3, where the
	// trap stop leaves the task; seqEnd the offset after its last
	// syscall, where the tail call's exit stop leaves it.
	seqTrap = 0x35
	seqEnd  = 0x37
)

// SeqCall is one entry of a call table.
type SeqCall struct {
	Nr   uintptr
	Args [6]uint64
}

// PutSeq encodes calls as a table into b (len(calls)*SeqEntrySize bytes).
func PutSeq(b []byte, calls []SeqCall) {
	le := binary.LittleEndian
	for k, c := range calls {
		e := b[k*SeqEntrySize:]
		le.PutUint64(e, uint64(c.Nr))
		for j, a := range c.Args {
			le.PutUint64(e[8+8*j:], a)
		}
		le.PutUint64(e[56:], 0)
	}
}

// SeqResult decodes the result of entry k of a table read back from the
// task: what the call returned, or its error as an unix.Errno.
func SeqResult(b []byte, k int) (uint64, error) {
	r := binary.LittleEndian.Uint64(b[k*SeqEntrySize+56:])
	if v := int64(r); v < 0 && v >= -4095 {
		return r, unix.Errno(-v)
	}
	return r, nil
}

// Seq is the call table one task of EachSeq runs: N entries at Addr of
// its memory, written there by the caller, run by SeqCode at Code.
type Seq struct {
	Code, Addr uint64
	N          int
}

// EachSeq makes every task of ts run its table of calls (seqs[i]) through
// SeqCode (at seqs[i].Code in its memory, executable), all tasks at once. Each call's result is written into its entry: the caller reads
// the tables back. The error is set if running a table itself failed (a
// task gone, a ptrace request refused); every task is then back in its
// stop with its own registers and mask, as after Each.
//
// Each (one injection per call) costs every task two ptrace stops and
// nine requests per call; a table costs one stop and five requests for
// all its calls in a task of the restore, three stops and eleven
// requests in a seized task (ten where its process has no SIGTRAP
// handler):
//
//   - The task gets the code's registers and runs free (PTRACE_CONT) to
//     the int3, whose SIGTRAP stops it. A seized task runs with every
//     signal blocked, its own mask put back at the end. The trap is
//     forced: through a blocked or ignored SIGTRAP, the kernel resets
//     the handler to SIG_DFL (and unblocks it), which changes nothing
//     for a process that has no handler. One that has a handler
//     (TrapCaught) runs with SIGTRAP alone unblocked; a SIGTRAP sent to
//     it meanwhile stops it elsewhere than after the int3 and is lost,
//     as it would be during a single-step. A process that ignores
//     SIGTRAP or has one pending (NoSeq) has its calls made one by one,
//     as does a task with a SIGTRAP queued by the restore (see
//     syscallTrapQueued).
//   - A seized task must be left, as soon as it can be, in a stop that a
//     tracer's death cannot hurt (see syscallSeized); the trap's
//     signal-delivery stop is not one (a detach there would deliver the
//     SIGTRAP). So it goes on with PTRACE_SYSCALL through the code's last
//     instruction, a getpid, with its own mask from the call's entry stop,
//     and gets its registers back at the exit stop, as after Syscall. A
//     stasis killed while a seized task runs its table (from the moment
//     it gets the code's registers to that exit stop: the table's calls
//     and two stops) leaves that task inside the injected code, as one
//     killed during an injected call leaves it inside the call.
//
// The tasks a table's calls create (clone3 in a task of the restore, which
// traces them from birth) are in the task's Forked, in the order of the
// calls, each stopped before its first instruction: it never runs the
// rest of the table.
//
// Like Each, EachSeq must run on the tracer thread.
func EachSeq(ts []*Task, seqs []Seq) error {
	fail := make([]error, len(ts))
	// step: 0 run one by one, 1 on its way to the trap, 2 (seized) on its
	// way to the tail's entry stop, 3 to its exit stop, 4 done or failed.
	step := make([]int, len(ts))
	for i, t := range ts {
		if t.NoSeq || t.trapQueued || t.SyscallIP == 0 {
			continue
		}
		if err := t.onTracer(); err != nil {
			fail[i], step[i] = fmt.Errorf("run calls in %d: %w", t.Tid, err), 4
			continue
		}
		step[i] = 4
		t.Forked = t.Forked[:0]
		regs := t.Base
		regs.Rip, regs.Rbx, regs.R12 = seqs[i].Code, seqs[i].Addr, uint64(seqs[i].N)
		regs.Orig_rax = ^uint64(0)
		if t.seized && t.Blocked|unblockable != t.seqMask() {
			if err := SetSigmask(t.Tid, t.seqMask()); err != nil {
				fail[i] = err
				continue
			}
		}
		if err := SetRegs(t.Tid, &regs); err != nil {
			fail[i] = errors.Join(err, t.backIfSeized())
			continue
		}
		if err := Cont(t.Tid, 0); err != nil {
			fail[i] = errors.Join(err, t.backIfSeized())
			continue
		}
		step[i] = 1
	}
	for i, t := range ts {
		if step[i] != 1 {
			continue
		}
		step[i] = 4
		if err := t.waitSeqTrap(seqs[i].Code + seqTrap); err != nil {
			fail[i] = fmt.Errorf("run calls in %d: %w", t.Tid, err)
			if !errors.Is(err, ErrExited) {
				fail[i] = errors.Join(fail[i], t.backIfSeized())
			}
			continue
		}
		if !t.seized {
			continue
		}
		if err := syscallResume(t.Tid, 0); err != nil {
			fail[i] = errors.Join(err, t.putBack())
			continue
		}
		step[i] = 2
	}
	for i, t := range ts {
		if step[i] != 2 {
			continue
		}
		step[i] = 4
		if err := t.waitSyscallStop(); err != nil {
			fail[i] = seqTailErr(t, err)
			continue
		}
		// The trap, forced through a blocked SIGTRAP, unblocked it: the
		// mask is the task's own only once set again.
		if t.Blocked|unblockable != t.seqMask() || !t.TrapCaught {
			if err := SetSigmask(t.Tid, t.Blocked); err != nil {
				fail[i] = errors.Join(err, t.putBack())
				continue
			}
		}
		if err := syscallResume(t.Tid, 0); err != nil {
			fail[i] = errors.Join(err, t.putBack())
			continue
		}
		step[i] = 3
	}
	for i, t := range ts {
		switch step[i] {
		case 0:
			fail[i] = t.seqOneByOne(seqs[i])
		case 3:
			if err := t.waitSyscallStop(); err != nil {
				fail[i] = seqTailErr(t, err)
				continue
			}
			if err := SetRegs(t.Tid, &t.Base); err != nil {
				fail[i] = err
			}
		}
	}
	return errors.Join(fail...)
}

// seqMask is the signal mask a seized task runs its table with:
// everything blocked, but SIGTRAP where the process has a handler.
func (t *Task) seqMask() uint64 {
	if t.TrapCaught {
		return ^uint64(0) &^ (1 << (unix.SIGTRAP - 1))
	}
	return ^uint64(0)
}

func seqTailErr(t *Task, err error) error {
	err = fmt.Errorf("run calls in %d: %w", t.Tid, err)
	if errors.Is(err, ErrExited) {
		return err
	}
	return errors.Join(err, t.putBack())
}

// backIfSeized gives a seized task its registers and mask back after a
// failed step; a task of the restore is left to its rollback.
func (t *Task) backIfSeized() error {
	if !t.seized {
		return nil
	}
	return t.putBack()
}

// waitSeqTrap waits for the task, resumed into SeqCode, to stop at its
// int3 (trap is the address after it). Other stops are stepped over: an
// event stop (a group stop begun meanwhile); a signal (SIGSTOP, or a
// SIGTRAP sent from outside, which stops the task elsewhere), recorded
// to be sent again when the task is let go. A fault (a table or an
// argument that points nowhere) is an error: the faulting instruction
// would only fault again.
//
// A seized task whose process has no SIGTRAP handler runs the table with
// every signal blocked: no SIGTRAP can stop it but the int3's (one sent
// from outside stays pending until then), so its registers need not be
// read to tell.
func (t *Task) waitSeqTrap(trap uint64) error {
	for {
		st, err := Wait(t.Tid)
		if err != nil {
			return err
		}
		switch {
		case st.Signal == unix.SIGTRAP && st.Event == 0:
			if t.seized && !t.TrapCaught {
				return nil
			}
			r, err := GetRegs(t.Tid)
			if err != nil {
				return err
			}
			if r.Rip == trap {
				return nil
			}
			t.Signals = append(t.Signals, st.Signal)
		case st.Event == unix.PTRACE_EVENT_FORK || st.Event == unix.PTRACE_EVENT_CLONE || st.Event == unix.PTRACE_EVENT_VFORK:
			// A clone3 of the table (a restore's): the new task, in
			// the order of the table's calls.
			msg, err := GetEventMsg(t.Tid)
			if err != nil {
				return err
			}
			t.Forked = append(t.Forked, int(msg))
		case st.Event != 0:
		case st.Signal == unix.SIGSEGV || st.Signal == unix.SIGBUS || st.Signal == unix.SIGILL || st.Signal == unix.SIGFPE:
			r, _ := GetRegs(t.Tid)
			return fmt.Errorf("%v at %#x while running a call table: %w", st.Signal, r.Rip, ErrSeqFault)
		default:
			t.Signals = append(t.Signals, st.Signal)
		}
		if err := Cont(t.Tid, 0); err != nil {
			return err
		}
	}
}

// seqOneByOne makes the calls of a table with one injection each, for a
// task that cannot take a trap (NoSeq, a SIGTRAP queued), and writes
// their results into the table as SeqCode would.
func (t *Task) seqOneByOne(s Seq) error {
	b := make([]byte, s.N*SeqEntrySize)
	if err := ReadMem(t.Tgid(), s.Addr, b); err != nil {
		return fmt.Errorf("read the call table of %d: %w", t.Tid, err)
	}
	le := binary.LittleEndian
	for k := 0; k < s.N; k++ {
		e := b[k*SeqEntrySize:]
		var args [6]uint64
		for j := range args {
			args[j] = le.Uint64(e[8+8*j:])
		}
		r, err := t.Syscall(uintptr(le.Uint64(e)), args[:]...)
		var errno unix.Errno
		switch {
		case errors.As(err, &errno):
			r = uint64(-int64(errno))
		case err != nil:
			return err
		}
		le.PutUint64(e[56:], r)
	}
	if err := WriteMem(t.Tgid(), s.Addr, b); err != nil {
		return fmt.Errorf("write the call table of %d: %w", t.Tid, err)
	}
	return nil
}
