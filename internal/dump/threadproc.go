package dump

import (
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
				// The task directory's files are the thread's own: its
				// /proc/TID/stat would sum the whole group (see
				// proc.IOWorker), O(N^2) for N threads.
				if tp.stat, tp.err = proc.ReadTaskStat(p.pid, tid); tp.err == nil {
					tp.status, tp.err = proc.ReadTaskStatus(p.pid, tid)
				}
				close(tp.done)
			}
		}()
	}
	return tps
}
