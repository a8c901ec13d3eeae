package restore

import (
	"errors"
	"fmt"

	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/core"
	"github.com/stasis-cr/stasis/internal/pstree"
	"github.com/stasis-cr/stasis/internal/ptrace"
	"github.com/stasis-cr/stasis/internal/puppet"
	"github.com/stasis-cr/stasis/internal/tty"
)

// create turns the freshly cloned task into its image's process as far as
// its children need it (memory, session, group leadership), then creates
// the children from it.
func (tr *taskRestorer) create() error {
	if err := ptrace.SetSigmask(tr.t.Tid, ^uint64(0)); err != nil {
		return err
	}
	img := tr.img
	if img.Live() {
		steps := []struct {
			name string
			fn   func() error
		}{
			{"memory", func() error { return tr.restoreMemory(tr.r.memoryParent(img)) }},
			{"mm", tr.restoreMM},
			{"subreaper", tr.earlySubreaper},
		}
		for _, s := range steps {
			if err := s.fn(); err != nil {
				return fmt.Errorf("restore pid %d: %s: %w", tr.t.Tid, s.name, err)
			}
		}
	}
	if err := tr.leadSessionOrGroup(); err != nil {
		return fmt.Errorf("restore pid %d: session: %w", tr.t.Tid, err)
	}
	for _, cp := range img.Children {
		c := tr.r.imgs.of(cp)
		if err := tr.r.stop("create tree", c.Pid()); err != nil {
			return err
		}
		t, err := tr.r.cloneProcess(tr.t, tr.s, c)
		if err != nil {
			if errors.Is(err, pstree.ErrPidInUse) {
				return pstree.PidInUse(c.Pid())
			}
			return err
		}
		ctr := tr.r.newTaskRestorer(t, c)
		if err := tr.r.ns.Mount(ctr); err != nil {
			return err
		}
		if err := ctr.create(); err != nil {
			return err
		}
	}
	// Once all are made: then its children are born in a child's pid
	// namespace again, if they were (`unshare --pid --fork`).
	for _, c := range img.Children {
		if err := tr.r.ns.ChildCreated(tr, img.Pid(), c.Pid()); err != nil {
			return err
		}
	}
	return nil
}

// memoryParent returns the image whose address space a new task starts
// with: its parent's, or for a task created under a helper, that of the
// helper's nearest live ancestor (helpers change nothing in memory).
func (r *restorer) memoryParent(img *taskImages) *taskImages {
	p := img.Parent
	for p != nil && p.Helper {
		p = p.Parent
	}
	if p == nil {
		return nil
	}
	return r.imgs.of(p)
}

// earlySubreaper sets child_subreaper before the rest of the task state:
// helpers exit before the tree runs, and their children must then go to
// the subreaper they went to originally.
func (tr *taskRestorer) earlySubreaper() error {
	if !tr.img.core.GetTc().GetChildSubreaper() {
		return nil
	}
	_, err := tr.t.Call("prctl(PR_SET_CHILD_SUBREAPER)", unix.SYS_PRCTL, unix.PR_SET_CHILD_SUBREAPER, 1)
	return err
}

// leadSessionOrGroup starts the task's own session or group: children
// created after this inherit them.
func (tr *taskRestorer) leadSessionOrGroup() error {
	pid := tr.img.Pid()
	joins, err := tty.JoinsOwnSession(tr.r.files, pid)
	if err != nil {
		return err
	}
	return pstree.LeadSessionOrGroup(tr, tr.img.Proc, joins, func() error { return tty.TakeCtty(tr.r.files, tr) })
}

// joinGroup moves the task into its image's process group, which exists
// by now: its leader (or helper) was created during createTree.
func (tr *taskRestorer) joinGroup() error {
	pid, pgid := tr.img.Pid(), tr.img.Pgid()
	if pgid == pid || tr.img.Sid() == pid {
		return nil
	}
	// In a nested pid namespace, the group as the task sees it; one it
	// inherited from outside that namespace it cannot name nor leave.
	if pgid = tr.r.ns.LocalPid(pid, pgid); pgid == 0 {
		return nil
	}
	// The root of a shell job stays in the group of `stasis restore`.
	return pstree.JoinGroup(tr, pgid, tr.img == tr.r.imgs.root && tr.r.opts.ShellJob)
}

// restoreFiles gives the process its root, cwd, umask and fds.
func (tr *taskRestorer) restoreFiles() error {
	if !tr.img.Live() {
		return nil
	}
	fds := tr.img.fds
	shares, closes := tr.r.sharesParentFiles(tr.img), tr.r.closesChannel(tr) // sharedfdt.go
	for _, step := range []func() error{
		func() error { return tr.r.files.RestoreFS(tr, tr.img.fs) },
		func() error {
			if shares {
				return nil
			}
			return tr.r.files.RestoreFds(tr, fds)
		},
		func() error {
			if shares {
				return nil
			}
			return tr.r.files.RestoreOwners(tr, fds)
		},
		func() error {
			if shares {
				return nil
			}
			return tr.r.files.RestoreLocks(tr, fds)
		},
		func() error {
			if !closes {
				return nil
			}
			return puppet.CloseChannel(tr, tr.r.channelFd)
		},
	} {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// exitIfDead ends zombies with their exit status, which their parent
// will collect, and helpers, which their parent reaps right away.
func (tr *taskRestorer) exitIfDead() error {
	switch {
	case tr.img.Zombie:
		tc := tr.img.core.GetTc()
		return pstree.EndZombie(tr.t, tr.s, tc.GetComm(), tc.GetExitCode())
	case tr.img.Helper:
		parent := tr.r.proc(tr.img.Parent)
		return pstree.EndHelper(tr.t, tr.img.Pid(), parent.t, parent.s)
	}
	return nil
}

// restoreState sets the process-wide and per-thread state.
func (tr *taskRestorer) restoreState() error {
	if !tr.img.Live() {
		return nil
	}
	_, cores := tr.allThreads()
	core.HandOverTimerSignals(tr.img.core.GetTc(), cores)
	if err := core.RestoreProcess(tr, tr.img.core.GetTc()); err != nil {
		return err
	}
	ts, cores := tr.allThreads()
	if err := core.RestoreThreadCalls(tr, ts, cores, tr.r.scratchBase+seqCodeOff); err != nil {
		return err
	}
	for i, t := range ts {
		if err := core.RestoreThreadRest(tr.thread(t), tr.Pid(), cores[i]); err != nil {
			return err
		}
	}
	// Timers run from the moment they are created: as late as possible.
	return core.RestorePosixTimers(tr, tr.img.core.GetTc().GetTimers().GetPosix())
}

// restoreCreds installs every thread's seccomp filters (the leader first:
// a filter installed with TSYNC reaches the others), while the thread is
// still allowed to, then switches it to its credentials: the last
// injected calls but the final munmap. Every restored task is traced with
// PTRACE_O_SUSPEND_SECCOMP, so the filters do not see those calls.
func (tr *taskRestorer) restoreCreds() error {
	if !tr.img.Live() {
		return nil
	}
	ts, cores := tr.allThreads()
	for i, t := range ts {
		th := cores[i].GetThreadCore()
		if err := core.RestoreSeccomp(tr.thread(t), tr.r.imgs.seccomp, th.GetSeccompMode(), th.GetSeccompFilter()); err != nil {
			return fmt.Errorf("tid %d: %w", t.Tid, err)
		}
	}
	var cache core.CredCache
	for i, t := range ts {
		if err := core.RestoreCredsCached(tr.thread(t), cores[i], &cache); err != nil {
			return err
		}
	}
	return nil
}

// resume drops the scratch mapping and lets every thread run on its own
// registers. The munmap is the last injected call: it is stepped from the
// scratch page itself, and the trap after it comes before the CPU fetches
// anything from the now unmapped page; at that stop the leader's
// registers are replaced by the image's. The other threads are stopped
// elsewhere and just get theirs.
func (tr *taskRestorer) resume() error {
	if !tr.img.Live() {
		return nil
	}
	ts, cores := tr.allThreads()
	type final struct {
		regs   unix.PtraceRegs
		xstate []byte
	}
	finals := make([]final, len(ts))
	tmpl, err := ptrace.GetXState(tr.t.Tid)
	if err != nil {
		return err
	}
	for i, t := range ts {
		r, xs, err := core.FinalRegs(tmpl, t.Tid, cores[i])
		if err != nil {
			return err
		}
		finals[i] = final{r, xs}
	}
	if _, err := tr.t.Call("munmap scratch", unix.SYS_MUNMAP, tr.r.scratchBase, scratchSize); err != nil {
		return err
	}
	for i, t := range ts {
		if err := ptrace.SetRegs(t.Tid, &finals[i].regs); err != nil {
			return err
		}
		if err := ptrace.SetXState(t.Tid, finals[i].xstate); err != nil {
			return err
		}
		if err := ptrace.SetSigmask(t.Tid, threadMask(cores[i])); err != nil {
			return err
		}
	}
	sig := 0
	if tc := tr.img.core.GetTc(); tc.GetTaskState() == core.TaskStopped {
		sig = int(unix.SIGSTOP)
		if s := tc.GetStopSigno(); s != 0 {
			sig = int(s)
		}
	}
	for i := len(ts) - 1; i >= 0; i-- {
		s := 0
		if i == 0 {
			s = sig
		}
		if err := ptrace.Detach(ts[i].Tid, s); err != nil {
			return err
		}
	}
	return nil
}

func threadMask(ce *criucore.CoreEntry) uint64 {
	if th := ce.GetThreadCore(); th != nil && th.BlkSigset != nil {
		return th.GetBlkSigset()
	}
	return ce.GetTc().GetBlkSigset()
}

// proc returns the restorer of a process image.
func (r *restorer) proc(p *pstree.Proc) *taskRestorer {
	for _, tr := range r.procs {
		if tr.img.Proc == p {
			return tr
		}
	}
	return nil
}
