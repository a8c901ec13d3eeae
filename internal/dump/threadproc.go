package dump

import (
	"runtime"
	"sync/atomic"

	"github.com/stasis-cr/stasis/internal/core"
)

// threadProc is what core.ReadThreadProc reads of one thread (its /proc
// files, scheduling, robust list, credentials), read in the background
// while the tracer thread injects the calls of the threads: those calls
// leave the tracer waiting for the tracees to be scheduled, and the
// reads of 10,000 threads one after the other cost seconds.
type threadProc struct {
	tp   *core.ThreadProc
	err  error
	done chan struct{}
}

// readThreadProcs starts reading every thread of p, on up to GOMAXPROCS
// goroutines, in thread order; the leader's /proc stat and status are
// p.stat and p.status, read already. Entry i is ready once its done is
// closed. A caller that stops waiting leaves the goroutines to finish
// the reads.
func readThreadProcs(p *process) []*threadProc {
	tps := make([]*threadProc, len(p.threads))
	for i := range tps {
		tps[i] = &threadProc{done: make(chan struct{})}
	}
	var next atomic.Int64
	for w := min(runtime.GOMAXPROCS(0), len(tps)); w > 0; w-- {
		go func() {
			for i := int(next.Add(1) - 1); i < len(tps); i = int(next.Add(1) - 1) {
				tp := tps[i]
				if tid := p.threads[i].tid; tid == p.pid {
					tp.tp, tp.err = core.ReadThreadProc(p.pid, tid, p.stat, p.status)
				} else {
					tp.tp, tp.err = core.ReadThreadProc(p.pid, tid, nil, nil)
				}
				close(tp.done)
			}
		}()
	}
	return tps
}
