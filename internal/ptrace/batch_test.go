package ptrace

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// TestEach injects calls into several seized tasks at once: each gets
// its own arguments and result, an errno stays the call's, and every
// task is left with its registers and mask of the seize and sleeps on.
func TestEach(t *testing.T) {
	var ss []*sleeper
	for _, mode := range modes {
		ss = append(ss, startSleeper(t, mode, 300))
	}
	err := RunLocked(func() error {
		var ts []*Task
		for _, s := range ss {
			tr, err := seizeForTest(s.pid)
			if err != nil {
				return err
			}
			ts = append(ts, tr)
		}
		res, errs, err := Each(ts, unix.SYS_GETPID, func(int) []uint64 { return nil })
		if err != nil {
			return err
		}
		for i, s := range ss {
			if errs[i] != nil || int(res[i]) != s.pid {
				t.Errorf("getpid in task %d = %d, %v; want %d", i, res[i], errs[i], s.pid)
			}
		}
		_, errs, err = Each(ts, unix.SYS_CLOSE, func(i int) []uint64 { return []uint64{uint64(12345 + i)} })
		if err != nil {
			return err
		}
		for i := range ts {
			if !errors.Is(errs[i], unix.EBADF) {
				t.Errorf("close in task %d: %v, want EBADF", i, errs[i])
			}
		}
		for _, tr := range ts {
			regs, err := GetRegs(tr.Tid)
			if err != nil {
				return err
			}
			if regs != tr.Base {
				t.Errorf("registers of %d after the calls: %+v, want those of the seize %+v", tr.Tid, regs, tr.Base)
			}
			if m, err := GetSigmask(tr.Tid); err != nil || m != tr.Blocked {
				t.Errorf("mask of %d after the calls %#x (%v), want %#x", tr.Tid, m, err, tr.Blocked)
			}
		}
		for _, tr := range ts {
			if err := Detach(tr.Tid, 0); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ss {
		s.checkAlive(t, 0)
	}
}
