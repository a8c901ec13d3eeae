package restore

import (
	"github.com/stasis-cr/stasis/internal/lazy"
)

// Lazy restore (--lazy-pages): the memory phase leaves the pages marked
// PE_LAZY missing (mem.Restorer.Lazy); before the task state, each
// process's userfaultfd, its lazy areas registered, goes to the
// lazy-pages daemon listening in the work dir (package lazy), and once the
// tasks run the daemon is told the restore is finished (criu's order).

// checkLazy refuses, before anything is made, what the lazy options do
// not allow, and connects to the daemon.
func (r *restorer) checkLazy() error {
	for _, ti := range r.imgs.all {
		if ti.mem != nil {
			if err := ti.mem.CheckLazy(uint32(ti.Pid()), r.opts.LazyPages); err != nil {
				return err
			}
		}
	}
	if !r.opts.LazyPages {
		return nil
	}
	work := r.opts.WorkDir
	if work == "" {
		work = r.opts.ImagesDir
	}
	c, err := lazy.Connect(work)
	if err != nil {
		return err
	}
	r.lazy = c
	return nil
}

// lazyPages hands every process's userfaultfd to the daemon, one message
// per process of pstree.img (a zombie's pid negated), as criu does.
func (r *restorer) lazyPages() error {
	if r.lazy == nil {
		return nil
	}
	for _, tr := range r.procs {
		switch {
		case tr.img.Helper:
			continue // not in pstree.img: the daemon does not count it
		case tr.img.Zombie:
			if err := r.lazy.SendZombie(tr.Pid()); err != nil {
				return err
			}
		default:
			if err := lazy.Register(r.lazy, tr, tr.img.mem.LazyAreas()); err != nil {
				return err
			}
		}
	}
	return nil
}

// finishLazy tells the daemon the tasks run: it transfers the rest.
func (r *restorer) finishLazy() error {
	if r.lazy == nil {
		return nil
	}
	err := r.lazy.Finish()
	r.closeLazy()
	return err
}

// closeLazy closes the daemon's socket; before finishLazy, the daemon
// takes it as a failed restore.
func (r *restorer) closeLazy() {
	if r.lazy != nil {
		r.lazy.Close()
		r.lazy = nil
	}
}
