package dump

import "github.com/stasis-cr/stasis/internal/ptrace"

// interruptAhead seizes and interrupts every thread of tids that is not
// held yet, without waiting for any to stop: seizeTid then only waits
// for each stop (as for the threads --freeze-cgroup seized). A thread
// stops once the scheduler runs it, which on a loaded machine takes
// ~1 ms; asking them all first lets those waits overlap instead of
// adding up (10,000 threads: seconds). A thread that cannot be seized
// here is left for seizeTid, which tries again and reports why; one
// that is interrupted but never reached (the dump failed before) is
// let go by releaseFrozen.
func (d *dumper) interruptAhead(tids []int, seized map[int]bool) {
	if len(tids) < 2 {
		return
	}
	if d.preseized == nil {
		d.preseized = map[int]bool{}
	}
	for _, tid := range tids {
		if seized[tid] || d.preseized[tid] {
			continue
		}
		if ptrace.SeizeInterrupt(tid) == nil {
			d.preseized[tid] = true
		}
	}
}
