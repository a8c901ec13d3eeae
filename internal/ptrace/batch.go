package ptrace

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Each injects one system call into every task of ts at once and returns
// each call's raw result: what the call returned, or an unix.Errno in
// errs[i]. The error is set if an injection itself failed (a task gone,
// a ptrace request refused); every task is then back in its stop with
// its own registers and mask, as after Syscall.
//
// Injecting into one task costs two ptrace stops, and most of that time
// the tracer waits for the tracee to be scheduled. Each thread is its
// own tracee: Each starts the call in every task before it waits for
// any, so that their round trips overlap (the kernel runs them on every
// CPU, and one wait covers the others' scheduling delays). Seized tasks
// go through the same steps as syscallSeized, one pass over all tasks
// per step; the tasks of a restore are single-stepped as by Syscall,
// all started before the first wait; a task with a SIGTRAP queued (see
// syscallTrapQueued) takes Syscall after the others.
//
// args(i) gives the arguments of task i's call. Like Syscall, Each must
// run on the tracer thread.
func Each(ts []*Task, nr uintptr, args func(i int) []uint64) (res []uint64, errs []error, err error) {
	res = make([]uint64, len(ts))
	errs = make([]error, len(ts))
	fail := make([]error, len(ts))
	// step: 0 left to Syscall, 1 on its way to the entry stop, 2 on its
	// way to the exit stop, 3 done or failed, 4 single-stepped.
	step := make([]int, len(ts))
	for i, t := range ts {
		if !t.seized {
			if stepped(t, nr, args(i)) {
				if err := t.startStep(nr, args(i)); err != nil {
					fail[i] = err
					step[i] = 3
				} else {
					step[i] = 4
				}
			}
			continue
		}
		if t.SyscallIP == 0 {
			fail[i], step[i] = fmt.Errorf("inject syscall %d into %d: no syscall instruction known", nr, t.Tid), 3
			continue
		}
		if err := t.onTracer(); err != nil {
			fail[i], step[i] = fmt.Errorf("inject syscall %d into %d: %w", nr, t.Tid, err), 3
			continue
		}
		regs := t.injected(nr, args(i))
		step[i] = 3
		if err := t.blockAll(); err != nil {
			fail[i] = err
			continue
		}
		if err := SetRegs(t.Tid, &regs); err != nil {
			fail[i] = errors.Join(err, t.putBack())
			continue
		}
		if err := syscallResume(t.Tid, 0); err != nil {
			fail[i] = errors.Join(err, t.putBack())
			continue
		}
		step[i] = 1
	}
	// The entry stops: the call is entered, the task's own mask is
	// given back (see syscallSeized), and it goes on to the exit stop.
	for i, t := range ts {
		if step[i] != 1 {
			continue
		}
		step[i] = 3
		if err := t.waitSyscallStop(); err != nil {
			fail[i] = fmt.Errorf("inject syscall %d: %w", nr, err)
			if !errors.Is(err, ErrExited) {
				fail[i] = errors.Join(fail[i], t.putBack())
			}
			continue
		}
		if err := t.unblock(); err != nil {
			fail[i] = errors.Join(err, t.putBack())
			continue
		}
		if err := syscallResume(t.Tid, 0); err != nil {
			fail[i] = errors.Join(err, t.putBack())
			continue
		}
		step[i] = 2
	}
	for i, t := range ts {
		switch step[i] {
		case 0:
			res[i], errs[i] = t.Syscall(nr, args(i)...)
			var errno unix.Errno
			if errs[i] != nil && !errors.As(errs[i], &errno) {
				fail[i], errs[i] = errs[i], nil
			}
			continue
		case 3:
			continue
		case 4:
			r, err := t.finishStep(nr)
			var errno unix.Errno
			if err != nil && !errors.As(err, &errno) {
				fail[i] = err
				continue
			}
			res[i], errs[i] = r, err
			continue
		}
		if err := t.waitSyscallStop(); err != nil {
			fail[i] = fmt.Errorf("inject syscall %d: %w", nr, err)
			if !errors.Is(err, ErrExited) {
				fail[i] = errors.Join(fail[i], t.putBack())
			}
			continue
		}
		out, err := GetRegs(t.Tid)
		if perr := SetRegs(t.Tid, &t.Base); perr != nil {
			fail[i] = errors.Join(err, perr)
			continue
		}
		if err != nil {
			fail[i] = err
			continue
		}
		r, err := t.result(nr, &out)
		var errno unix.Errno
		if err != nil && !errors.As(err, &errno) {
			fail[i] = err
			continue
		}
		res[i], errs[i] = r, err
	}
	return res, errs, errors.Join(fail...)
}

// waitSyscallStop waits for the task, resumed with PTRACE_SYSCALL, to
// reach its next syscall stop, as toSyscallStop does after its resume.
func (t *Task) waitSyscallStop() error {
	for {
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
		if err := syscallResume(t.Tid, 0); err != nil {
			return err
		}
	}
}

// stepped tells whether Each single-steps t for call nr (Syscall's
// default for a task that is not seized and has no SIGTRAP queued).
func stepped(t *Task, nr uintptr, args []uint64) bool {
	return !t.seized && !t.trapQueued && !queuesTrap(nr, args) && t.SyscallIP != 0 && t.onTracer() == nil
}

// startStep gives t the registers of call nr and single-steps it over
// the syscall instruction; finishStep waits for the step's trap.
func (t *Task) startStep(nr uintptr, args []uint64) error {
	regs := t.injected(nr, args)
	if err := SetRegs(t.Tid, &regs); err != nil {
		return err
	}
	t.Forked = t.Forked[:0]
	return singleStep(t.Tid, 0)
}

func (t *Task) finishStep(nr uintptr) (uint64, error) {
	for {
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
			msg, err := GetEventMsg(t.Tid)
			if err != nil {
				return 0, err
			}
			t.Forked = append(t.Forked, int(msg))
		case st.Event != 0:
		default:
			t.Signals = append(t.Signals, st.Signal)
		}
		if err := singleStep(t.Tid, 0); err != nil {
			return 0, err
		}
	}
}
