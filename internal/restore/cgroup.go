package restore

import (
	"fmt"

	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/cgroup"
	"github.com/stasis-cr/stasis/internal/pstree"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

// loadCgroups reads cgroup.img (internal/cgroup) and checks that every
// task's and thread's set is in it, before anything is created.
func (r *restorer) loadCgroups() error {
	var err error
	if r.cg, err = cgroup.Load(r.imgs.dir, r.imgs.inv.GetRootCgSet(), r.opts.Cgroups); err != nil {
		return err
	}
	for _, ti := range r.imgs.all {
		if err := r.cg.CheckSet(ti.Pid(), cgSet(ti.core, 0)); err != nil {
			return err
		}
		for _, c := range ti.threads {
			if err := r.cg.CheckSet(ti.Pid(), cgSet(c, 0)); err != nil {
				return err
			}
		}
	}
	return nil
}

// cgSet is the cgroup set of a thread's core image: criu 4.2 keeps it in
// thread_core, older images in the leader's task_core; def if none.
func cgSet(c *criucore.CoreEntry, def uint32) uint32 {
	if id := c.GetThreadCore().GetCgSet(); id != 0 {
		return id
	}
	if id := c.GetTc().GetCgSet(); id != 0 {
		return id
	}
	return def
}

// bornInSet is the set a new process of img starts in: that of its
// nearest ancestor with one (helpers and zombies have none), or the
// restoring process's own for the root.
func (r *restorer) bornInSet(img *taskImages) uint32 {
	for p := img.Parent; p != nil; p = p.Parent {
		if ti := r.imgs.of(p); ti != nil && ti.core != nil && !p.Helper {
			if id := cgSet(ti.core, 0); id != 0 {
				return id
			}
		}
	}
	return r.imgs.inv.GetRootCgSet()
}

// enterCgroups moves the process just created for img into its cgroups
// before it runs or maps anything (its memory is charged there); the
// root of a tree with a cgroup namespace of its own creates it from the
// namespace's root cgroup. On failure the process is killed.
func (r *restorer) enterCgroups(t *ptrace.Task, img *taskImages) error {
	if img.core == nil {
		return nil // a helper: it stays where its parent is
	}
	id, cur := cgSet(img.core, 0), r.bornInSet(img)
	var err error
	if img == r.imgs.root && r.ns.NewCgroupNS() {
		err = r.cg.EnterNamespace(t, t.Tid, id, cur)
	} else {
		err = r.cg.Move(t.Tid, id, cur, false)
	}
	if err != nil {
		_ = unix.Kill(t.Tid, unix.SIGKILL)
		pstree.Reap([]int{t.Tid})
		return fmt.Errorf("restore pid %d: cgroups: %w", img.Pid(), err)
	}
	return nil
}

// moveThread moves thread i (pstree order) of tr, just created as t,
// into its cgroups where they are not its process's (cgroup v2 threaded
// cgroups, v1 per-thread ones).
func (tr *taskRestorer) moveThread(i int, t *ptrace.Task) error {
	if i-1 >= len(tr.img.threads) {
		return nil
	}
	proc := cgSet(tr.img.core, 0)
	id := cgSet(tr.img.threads[i-1], proc)
	if err := tr.r.cg.Move(t.Tid, id, proc, true); err != nil {
		return fmt.Errorf("restore pid %d: thread %d: cgroups: %w", tr.img.Pid(), t.Tid, err)
	}
	return nil
}
