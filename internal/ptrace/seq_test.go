package ptrace

import (
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// TestEachSeq runs a table of calls in several seized tasks at once
// (and, with NoSeq, one injection each): every call's result lands in
// its entry, an errno stays the call's, pointer arguments reach the
// task's memory, and every task is left with its registers and mask of
// the seize and sleeps on, its SIGTRAP handler untouched.
func TestEachSeq(t *testing.T) {
	for _, noSeq := range []bool{false, true} {
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
				tr.NoSeq = noSeq
				tr.TrapCaught = true // the sleeper has a SIGTRAP handler
				ts = append(ts, tr)
			}
			var scr []*Scratch
			var seqs []Seq
			for _, tr := range ts {
				s, err := MapExecScratch(tr, 4096)
				if err != nil {
					return err
				}
				scr = append(scr, s)
				tab := make([]byte, 3*SeqEntrySize)
				PutSeq(tab, []SeqCall{
					{Nr: unix.SYS_GETPID},
					{Nr: unix.SYS_CLOSE, Args: [6]uint64{12345}},
					{Nr: unix.SYS_PRCTL, Args: [6]uint64{unix.PR_GET_PDEATHSIG, s.Addr + 1024}},
				})
				if _, err := s.Put(0, SeqCode); err != nil {
					return err
				}
				if _, err := s.Put(256, tab); err != nil {
					return err
				}
				if _, err := s.Put(1024, []byte{9, 9, 9, 9}); err != nil {
					return err
				}
				seqs = append(seqs, Seq{Code: s.Addr, Addr: s.Addr + 256, N: 3})
			}
			if err := EachSeq(ts, seqs); err != nil {
				return err
			}
			for i, tr := range ts {
				tab, err := scr[i].Get(256, 3*SeqEntrySize)
				if err != nil {
					return err
				}
				if r, err := SeqResult(tab, 0); err != nil || int(r) != ss[i].pid {
					t.Errorf("noSeq=%v: getpid in %d = %d, %v", noSeq, tr.Tid, r, err)
				}
				if _, err := SeqResult(tab, 1); !errors.Is(err, unix.EBADF) {
					t.Errorf("noSeq=%v: close in %d: %v, want EBADF", noSeq, tr.Tid, err)
				}
				if r, err := SeqResult(tab, 2); err != nil || r != 0 {
					t.Errorf("noSeq=%v: prctl in %d = %d, %v", noSeq, tr.Tid, r, err)
				}
				b, err := scr[i].Get(1024, 4)
				if err != nil {
					return err
				}
				if v := binary.LittleEndian.Uint32(b); v != 0 {
					t.Errorf("noSeq=%v: pdeath signal of %d read as %d, want 0", noSeq, tr.Tid, v)
				}
				regs, err := GetRegs(tr.Tid)
				if err != nil {
					return err
				}
				if regs != tr.Base {
					t.Errorf("noSeq=%v: registers of %d after the calls: %+v, want %+v", noSeq, tr.Tid, regs, tr.Base)
				}
				if m, err := GetSigmask(tr.Tid); err != nil || m != tr.Blocked {
					t.Errorf("noSeq=%v: mask of %d after the calls %#x (%v), want %#x", noSeq, tr.Tid, m, err, tr.Blocked)
				}
				if err := scr[i].Unmap(tr); err != nil {
					return err
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
}

// TestEachSeqFault gives a task a table that points nowhere: the fault
// is an error (not a loop on the faulting instruction), and the task
// gets its registers back and sleeps on.
func TestEachSeqFault(t *testing.T) {
	s := startSleeper(t, "nanosleep", 300)
	err := RunLocked(func() error {
		tr, err := seizeForTest(s.pid)
		if err != nil {
			return err
		}
		scr, err := MapExecScratch(tr, 4096)
		if err != nil {
			return err
		}
		if _, err := scr.Put(0, SeqCode); err != nil {
			return err
		}
		err = EachSeq([]*Task{tr}, []Seq{{Code: scr.Addr, Addr: 8, N: 1}})
		if !errors.Is(err, ErrSeqFault) {
			t.Errorf("a table at address 8: %v, want ErrSeqFault", err)
		}
		if regs, err := GetRegs(tr.Tid); err != nil || regs != tr.Base {
			t.Errorf("registers after the fault: %+v (%v), want %+v", regs, err, tr.Base)
		}
		if err := scr.Unmap(tr); err != nil {
			return err
		}
		return Detach(tr.Tid, 0)
	})
	if err != nil {
		t.Fatal(err)
	}
	s.checkAlive(t, 0)
}
