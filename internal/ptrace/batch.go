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
// per step; other tasks take Syscall one after the other.
//
// args(i) gives the arguments of task i's call. Like Syscall, Each must
// run on the tracer thread.
func Each(ts []*Task, nr uintptr, args func(i int) []uint64) (res []uint64, errs []error, err error) {
	res = make([]uint64, len(ts))
	errs = make([]error, len(ts))
	fail := make([]error, len(ts))
	// step: 0 not seized (Syscall), 1 on its way to the entry stop,
	// 2 on its way to the exit stop, 3 done or failed.
	step := make([]int, len(ts))
	for i, t := range ts {
		if !t.seized {
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
		if err := SetSigmask(t.Tid, ^uint64(0)); err != nil {
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
		if err := SetSigmask(t.Tid, t.Blocked); err != nil {
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
