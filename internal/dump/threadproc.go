package dump

import (
	"runtime"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/core"
	"github.com/stasis-cr/stasis/internal/mem"
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

// mapCoreScratch maps the scratch memory of p's task state phase. It is
// executable, so that each thread runs the calls it is asked as one
// table (ptrace.EachSeq), and sized for the tables of a batch of
// threads; where the process may not have a writable and executable
// mapping (an LSM's execmem rule), it is the data-only scratch, and the
// calls are injected one by one. Each thread is told how its process
// takes the SIGTRAP that ends a table.
func mapCoreScratch(p *process) (*ptrace.Scratch, error) {
	l := p.leader()
	const trap = 1 << (unix.SIGTRAP - 1)
	for _, th := range p.threads {
		th.tr.NoSeq = (p.status.SigIgn|p.status.ShdPnd)&trap != 0
		th.tr.TrapCaught = p.status.SigCgt&trap != 0
	}
	s, err := ptrace.MapExecScratch(l.tr, core.ScratchFor(len(p.threads)))
	if err == nil {
		return s, nil
	}
	return ptrace.MapScratch(l.tr, 0, 4*mem.PageSize)
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
