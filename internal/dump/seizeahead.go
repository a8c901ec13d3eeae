package dump

import (
	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

// unseized lists the threads of pid that seen does not hold, and adds
// the io_uring workers among them to it (they cannot be stopped and are
// no part of the image). The seize lists a process's threads until a
// pass finds no new one: looking only at the new ones keeps a pass of
// 10,000 threads to one directory read.
func unseized(pid int, seen map[int]bool) ([]int, error) {
	tids, err := proc.TaskIDs(pid)
	if err != nil {
		return nil, err
	}
	out := tids[:0]
	for _, tid := range tids {
		if seen[tid] {
			continue
		}
		if proc.IOWorker(pid, tid) {
			seen[tid] = true
			continue
		}
		out = append(out, tid)
	}
	return out, nil
}

// interruptAhead seizes and interrupts every thread of tids that is not
// held yet, without waiting for any to stop: seizeTid then only waits
// for each stop (as for the threads --freeze-cgroup seized). A thread
// stops once the scheduler runs it, which on a loaded machine takes
// ~1 ms; asking them all first lets those waits overlap instead of
// adding up (10,000 threads: seconds). A thread that cannot be seized
// here is left for seizeTid, which tries again and reports why; one
// that is interrupted but never reached (the dump failed before) is
// let go by releaseFrozen.
func (d *dumper) interruptAhead(tids []int) {
	if len(tids) < 2 {
		return
	}
	if d.preseized == nil {
		d.preseized = map[int]bool{}
	}
	for _, tid := range tids {
		if d.preseized[tid] {
			continue
		}
		if ptrace.SeizeInterrupt(tid) == nil {
			d.preseized[tid] = true
		}
	}
}
