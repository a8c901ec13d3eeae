package dump

import (
	"runtime"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/core"
	"github.com/stasis-cr/stasis/internal/ptrace"
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
// goroutines, in thread order; the leader's /proc status is p.status,
// read already. Entry i is ready once its done is
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
					tp.tp, tp.err = core.ReadThreadProc(p.pid, tid, p.status)
				} else {
					tp.tp, tp.err = core.ReadThreadProc(p.pid, tid, nil)
				}
				close(tp.done)
			}
		}()
	}
	return tps
}

// trapRules tells each thread of p how its process takes the SIGTRAP
// that ends a call table (ptrace.EachSeq): a process that ignores
// SIGTRAP, or has one pending, has its threads' calls made one by one;
// one with a handler runs the tables with SIGTRAP unblocked.
func trapRules(p *process) {
	const trap = 1 << (unix.SIGTRAP - 1)
	for _, th := range p.threads {
		th.tr.NoSeq = (p.status.SigIgn|p.status.ShdPnd)&trap != 0
		th.tr.TrapCaught = p.status.SigCgt&trap != 0
	}
}

// noSeqIfTrapPending waits for the /proc status of threads ts (tps) and
// has those with a SIGTRAP of their own pending asked one call at a time:
// the trap that ends a call table would merge with it, and take it.
func noSeqIfTrapPending(tps []*threadProc, ts []*ptrace.Task) {
	const trap = 1 << (unix.SIGTRAP - 1)
	for i, tp := range tps {
		<-tp.done
		if tp.err == nil && tp.tp.Status.SigPnd&trap != 0 {
			ts[i].NoSeq = true
		}
	}
}
