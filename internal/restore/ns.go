package restore

import (
	"fmt"
	"strings"

	"github.com/stasis-cr/stasis/internal/kerndat"
	"github.com/stasis-cr/stasis/internal/ns"
	"github.com/stasis-cr/stasis/internal/pstree"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

// loadNamespaces reads the namespaces of the images (internal/ns): which
// the root creates, each task's pids at every pid namespace level.
func (r *restorer) loadNamespaces() error {
	tasks := make([]ns.Task, 0, len(r.imgs.all))
	for _, ti := range r.imgs.all {
		parent := 0
		if ti.Parent != nil {
			parent = ti.Parent.Pid()
		}
		tasks = append(tasks, ns.Task{Parent: parent, IDs: ti.ids, Pstree: ti.Entry})
	}
	var err error
	if r.ns, err = ns.Load(r.imgs.dir, r.imgs.inv.GetRootIds(), tasks); err != nil {
		return err
	}
	if err := r.ns.PrepareMounts(r.opts.Mounts); err != nil {
		return err
	}
	if k := r.ns.NewKinds(); len(k) > 0 && r.opts.Unprivileged {
		return fmt.Errorf("restore: the tree's own %s namespaces: creating them needs CAP_SYS_ADMIN, which --unprivileged has not: %w",
			strings.Join(k, ", "), kerndat.ErrPrivilege)
	}
	return nil
}

// cloneProcess creates process img from t with its pids at every pid
// namespace level and the namespaces it starts.
func (r *restorer) cloneProcess(t *ptrace.Task, s *ptrace.Scratch, img *taskImages) (*ptrace.Task, error) {
	pids, flags := r.ns.Clone(img.Pid())
	return pstree.CloneWithPids(t, s, pids, flags)
}
