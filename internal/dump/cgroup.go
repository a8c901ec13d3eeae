package dump

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/cgroup"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

// dumpCgroups records the cgroups of p and of each of its threads
// (internal/cgroup): criu 4.2 keeps each thread's set in its core image.
func (d *dumper) dumpCgroups(p *process) error {
	tids := make([]int, len(p.threads))
	for i, th := range p.threads {
		tids[i] = th.tid
	}
	ids, err := d.cg.Threads(p.pid, tids, p == d.root)
	if err != nil {
		return fmt.Errorf("cgroups of pid %d: %w", p.pid, err)
	}
	for i, th := range p.threads {
		if id := ids[i]; id != 0 && th.core != nil && th.core.ThreadCore != nil {
			th.core.ThreadCore.CgSet = proto.Uint32(id)
		}
	}
	return nil
}

// freezeCgroup freezes --freeze-cgroup's cgroup, seizes every thread in
// it while nothing there can fork or clone, and thaws it: each seized
// thread then goes straight into its ptrace stop, which seizeTree waits
// for. The cgroup is thawed whatever happens.
func (d *dumper) freezeCgroup() error {
	path := d.opts.Cgroups.FreezeCgroup
	if path == "" {
		return nil
	}
	f, err := cgroup.Freeze(path)
	if err != nil {
		return err
	}
	defer func() {
		if terr := f.Thaw(); terr != nil {
			d.log.Error("thaw the frozen cgroup", "cgroup", path, "err", terr)
		}
	}()
	d.freezer = f
	if f.V1() {
		d.cg.SetFreezerState(f.State())
	}
	tids, err := f.Tasks()
	if err != nil {
		return err
	}
	d.preseized = map[int]bool{}
	for tid := range tids {
		if err := ptrace.SeizeInterrupt(tid); err != nil {
			if errors.Is(err, unix.ESRCH) {
				continue // exited before the freeze took it
			}
			d.releaseFrozen()
			return fmt.Errorf("--freeze-cgroup %s: seize tid %d of pid %d: %w", path, tid, tids[tid], err)
		}
		d.preseized[tid] = true
	}
	d.log.Info("cgroup frozen and seized", "cgroup", path, "threads", len(d.preseized))
	return f.Thaw()
}

// restoreFreezer freezes --freeze-cgroup's cgroup again if it was frozen
// before the dump, once the tree is resumed or killed (criu does the
// same: containerd pauses a task, checkpoints it, then resumes it).
func (d *dumper) restoreFreezer() {
	if err := d.freezer.Restore(); err != nil {
		d.log.Error("freeze the cgroup again", "cgroup", d.opts.Cgroups.FreezeCgroup, "err", err)
	}
}

// seizeTid seizes thread tid and waits for its stop; one seized through
// the frozen cgroup only needs the wait.
func (d *dumper) seizeTid(tid int) (*ptrace.Task, unix.Signal, error) {
	if d.preseized[tid] {
		delete(d.preseized, tid)
		return ptrace.StopSeized(tid)
	}
	return ptrace.SeizeAndStop(tid)
}

// releaseFrozen lets go of the threads seized through the frozen cgroup
// that are not the dumped tree's: the cgroup may hold other processes.
func (d *dumper) releaseFrozen() {
	for tid := range d.preseized {
		t, sig, err := ptrace.StopSeized(tid)
		if err != nil {
			continue // gone
		}
		if sig == unix.SIGTRAP {
			sig = 0
		}
		if err := ptrace.Detach(tid, int(sig)); err != nil {
			d.log.Warn("release a thread of the frozen cgroup", "tid", tid, "err", err)
		}
		for _, s := range t.Signals {
			if s != unix.SIGTRAP {
				_ = unix.Tgkill(t.Tgid(), tid, s)
			}
		}
	}
	d.preseized = nil
}
