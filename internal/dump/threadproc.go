package dump

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"sync/atomic"

	"github.com/stasis-cr/stasis/internal/proc"
)

// threadProc is one thread's /proc stat and status, read in the
// background while the tracer thread injects the calls of the threads
// before it: those calls leave the tracer waiting for the tracee to be
// scheduled, and reading /proc of 1,000 threads one after the other
// costs ~0.2 s on the development VMs.
type threadProc struct {
	stat   *proc.Stat
	status *proc.Status
	err    error
	done   chan struct{}
}

// readThreadProcs starts reading /proc/TID/stat and status of every
// thread of p but the leader (whose p.stat and p.status are read
// already), on up to GOMAXPROCS goroutines, in thread order. Entry i is
// ready once its done is closed; the leader's is closed at once, empty.
// A caller that stops waiting leaves the goroutines to finish the reads.
func readThreadProcs(p *process) []*threadProc {
	tps := make([]*threadProc, len(p.threads))
	for i := range tps {
		tps[i] = &threadProc{done: make(chan struct{})}
	}
	close(tps[0].done)
	var next atomic.Int64
	next.Store(1)
	for w := min(runtime.GOMAXPROCS(0), len(tps)-1); w > 0; w-- {
		go func() {
			for i := int(next.Add(1) - 1); i < len(tps); i = int(next.Add(1) - 1) {
				tp := tps[i]
				tid := p.threads[i].tid
				if tp.stat, tp.err = readTaskFile(p.pid, tid, "stat", proc.ParseStat); tp.err == nil {
					tp.status, tp.err = readTaskFile(p.pid, tid, "status", proc.ParseStatus)
				}
				close(tp.done)
			}
		}()
	}
	return tps
}

// readTaskFile parses /proc/PID/task/TID/name. /proc/TID/stat of a
// thread that is not the leader is the whole process's view: the kernel
// sums the times and faults of every thread of the group for it
// (do_task_stat with whole=1), so reading it for each of N threads costs
// O(N^2): 10,000 threads spent seconds of system time there. The task
// directory's file is the thread's own (whole=0); the fields a thread's
// core entry takes from stat (comm, nice, policy, priority) and status
// (ids, caps, seccomp) are per thread in both.
func readTaskFile[T any](pid, tid int, name string, parse func(io.Reader) (T, error)) (T, error) {
	p := fmt.Sprintf("/proc/%d/task/%d/%s", pid, tid, name)
	f, err := os.Open(p)
	if err != nil {
		var zero T
		return zero, err
	}
	defer f.Close()
	v, err := parse(f)
	if err != nil {
		return v, fmt.Errorf("%s: %w", p, err)
	}
	return v, nil
}
