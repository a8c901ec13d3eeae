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
	Status *proc.Status

	// Scheduling, from sched_getattr (and getpriority for the nice
	// value of a real-time thread, which sched_getattr does not give):
	// what /proc/PID/task/TID/stat shows, without reading it.
	policy, rtPrio uint32
	nice           int32
	resetOnFork    bool              // sched_getattr: SCHED_FLAG_RESET_ON_FORK
	robustHead     uint64            // get_robust_list
	robustLen      uint64            //
	creds          *creds.CredsEntry // from Status, in the thread's user namespace; Secbits unset
}

// ReadThreadProc reads what ThreadProc holds of thread tid of process
// pid. status is its /proc status if read already; nil reads it from
// /proc/PID/task/TID, the thread's own view. The thread's name, the one
// thing its /proc stat would add, is asked by AskThreads.
func ReadThreadProc(pid, tid int, status *proc.Status) (*ThreadProc, error) {
	tp := &ThreadProc{Status: status}
	var err error
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
			tp.policy, tp.rtPrio, tp.nice = a.Policy, a.Priority, a.Nice
			if a.Policy != schedOther && a.Policy != schedBatch && a.Policy != schedIdle {
				// sched_getattr gives the nice value of a fair policy only.
				prio, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
				if err != nil {
					return err
				}
				tp.nice = int32(20 - prio) // the raw call returns 20 - nice
			}
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

// Fair scheduling policies (include/uapi/linux/sched.h), whose nice value
// sched_getattr gives.
const (
	schedOther = 0
	schedBatch = 3
	schedIdle  = 5
)
