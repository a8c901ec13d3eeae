package core

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/creds"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/proc"
)

// ThreadProc is what a dump learns of one stopped thread without its
// tracer: its /proc files and the system calls any thread of stasis may
// make about it. ReadThreadProc runs on any goroutine, so that a dump
// reads it for thousands of threads while the tracer injects calls
// (DumpThread then makes only the ptrace requests).
type ThreadProc struct {
	Stat   *proc.Stat
	Status *proc.Status

	resetOnFork bool              // sched_getattr: SCHED_FLAG_RESET_ON_FORK
	robustHead  uint64            // get_robust_list
	robustLen   uint64            //
	creds       *creds.CredsEntry // from Status, in the thread's user namespace; Secbits unset
}

// ReadThreadProc reads what ThreadProc holds of thread tid of process
// pid. st and status are its /proc stat and status if read already; nil
// reads them from /proc/PID/task/TID, the thread's own view (its
// /proc/TID/stat would sum the whole group: see proc.IOWorker).
func ReadThreadProc(pid, tid int, st *proc.Stat, status *proc.Status) (*ThreadProc, error) {
	tp := &ThreadProc{Stat: st, Status: status}
	var err error
	if tp.Stat == nil {
		if tp.Stat, err = proc.ReadTaskStat(pid, tid); err != nil {
			return nil, err
		}
	}
	if tp.Status == nil {
		if tp.Status, err = proc.ReadTaskStatus(pid, tid); err != nil {
			return nil, err
		}
	}
	steps := []struct {
		name string
		fn   func() error
	}{
		{"scheduling policy", func() error {
			// /proc's stat shows the policy without its reset-on-fork
			// flag; criu saves sched_getscheduler's, which has it.
			a, err := unix.SchedGetAttr(tid, 0)
			if err != nil {
				return err
			}
			tp.resetOnFork = a.Flags&unix.SCHED_FLAG_RESET_ON_FORK != 0
			return nil
		}},
		{"robust list", func() error {
			tp.robustHead, tp.robustLen, err = linux.GetRobustList(tid)
			return err
		}},
		{"credentials", func() error {
			if tp.creds, err = userCreds(tid, tp.Status, 0); err != nil {
				return err
			}
			tp.creds.Secbits = nil // only an injected prctl tells
			return nil
		}},
	}
	for _, step := range steps {
		if err := step.fn(); err != nil {
			return nil, fmt.Errorf("dump %s of tid %d: %w", step.name, tid, err)
		}
	}
	return tp, nil
}
