package dump

import (
	"errors"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/timer"

	"github.com/stasis-cr/stasis/internal/core"
	"github.com/stasis-cr/stasis/internal/mem"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

// The task state phase's injected calls, asked of many processes at
// once. Each injected call costs two ptrace stops, and most of that time
// the tracer waits for the tracee to be scheduled; the calls of one
// process follow each other, but those of different processes need not:
// ptrace.Each starts a call in every process before it waits for any,
// so that a tree's processes run their calls side by side on every CPU
// and one wait covers the others'. A tree of 51 processes made ~18
// round trips per process one after the other (~900 in all); now it
// makes the same number of calls in ~18 overlapped batches.

// asked is what the injected calls of the task state phase told of a
// process (dumpCore turns it into its core entries).
type asked struct {
	proc    core.ProcessCalls
	threads []core.ThreadCalls // in p.threads' order
	mm      mem.MMCalls        // for the memory layout phase
	posix   []*timer.PosixTimerEntry
}

// askTree asks every process of the tree at once, before the task state
// phase collects each one. A preflight leaves each process to dumpCore,
// which asks it alone, so that a refusal names its process and the
// others are still checked; so is a lone process.
func (d *dumper) askTree() error {
	var ps []*process
	for _, p := range d.all {
		if !p.zombie && !p.refused {
			ps = append(ps, p)
		}
	}
	if d.preflight || len(ps) < 2 {
		return nil
	}
	if err := d.stop("task state", 0); err != nil {
		return err
	}
	return d.ask(ps)
}

// ask maps a scratch area into every process of ps, injects the calls
// of the task state phase into all of them at once (core.AskProcesses,
// core.AskThreadsOf; the posix timers, rare, one process after the
// other) and those of the memory layout phase (mem.AskMM), and unmaps
// the scratch areas, leaving the answers in p.asked.
// On failure, the scratch areas it could not unmap are left in
// p.scratch, for resume.
func (d *dumper) ask(ps []*process) error {
	leaders := make([]*ptrace.Task, len(ps))
	handled := make([]uint64, len(ps))
	groups := make([][]*ptrace.Task, len(ps))
	for i, p := range ps {
		leaders[i] = p.leader().tr
		handled[i] = p.status.SigIgn | p.status.SigCgt
		for _, th := range p.threads {
			groups[i] = append(groups[i], th.tr)
		}
		// The threads' /proc status, which tells AskThreadsOf which of
		// them cannot run a call table (trapRules).
		if p.tps == nil {
			p.tps = readThreadProcs(p)
		}
		trapRules(p)
	}
	ss, err := ptrace.MapScratchEach(leaders, func(i int) uint64 { return core.ScratchFor(len(ps[i].threads)) })
	for i, p := range ps {
		p.scratch = ss[i]
	}
	if err == nil {
		err = d.askMapped(ps, leaders, ss, handled, groups)
	}
	uerr := ptrace.UnmapScratchEach(leaders, ss)
	for i, p := range ps {
		p.scratch = ss[i]
	}
	return errors.Join(err, uerr)
}

func (d *dumper) askMapped(ps []*process, leaders []*ptrace.Task, ss []*ptrace.Scratch, handled []uint64, groups [][]*ptrace.Task) error {
	pcs, err := core.AskProcesses(leaders, ss, handled)
	if err != nil {
		return err
	}
	tcs, err := core.AskThreadsOf(groups, ss, func(k, lo, hi int) {
		noSeqIfTrapPending(ps[k].tps[lo:hi], groups[k][lo:hi])
	})
	if err != nil {
		return err
	}
	mms, err := mem.AskMM(leaders)
	if err != nil {
		return err
	}
	for i, p := range ps {
		a := &asked{proc: pcs[i], threads: tcs[i], mm: mms[i]}
		if a.posix, err = core.DumpPosixTimers(leaders[i], ss[i]); err != nil {
			return err
		}
		p.asked = a
	}
	return nil
}
