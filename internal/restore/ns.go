package restore

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/kerndat"
	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/netns"
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
	if err := r.ns.LoadNet(r.netOptions(), r.log); err != nil {
		return err
	}
	if err := r.ns.LoadPid(r.netOptions().Inherit, r.opts.PidNS); err != nil {
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
	flags |= r.siblingFlag(t) | r.filesFlag(img) | r.fsFlag(img)
	c, err := pstree.CloneWithPids(t, s, pids, flags)
	if err != nil {
		return nil, err
	}
	if err := r.enterCgroups(c, img); err != nil {
		return nil, err
	}
	return c, nil
}

// netOptions are the network namespace's options with the --inherit-fd
// keys, one of which may be an external namespace's.
func (r *restorer) netOptions() netns.Options {
	o := r.opts.Net
	o.Inherit = map[string]int{}
	for _, in := range r.opts.Files.InheritFds {
		o.Inherit[in.Key] = in.Fd
	}
	return o
}

// netCreated runs once the root (host pid host) made or joined the
// tree's network namespace: the network lock is taken there, before its
// links exist, and the tree's sockets are made there from then on.
func (r *restorer) netCreated(host int) error {
	if !r.ns.HasNet() {
		return nil
	}
	if r.lockNet != nil {
		if err := r.lockNet(host); err != nil {
			return err
		}
		r.lockNet = nil
	}
	r.files.NetNS = func(fn func() error) error { return linux.InNamespace(host, unix.CLONE_NEWNET, fn) }
	return nil
}

// nsPath opens the namespace files of the images (files' nsfile.go):
// from a restored task in the namespace.
func (r *restorer) nsPath(id, cflag uint32) (string, error) {
	return r.ns.FilePath(id, cflag, func(pid int) (int, bool) { h, ok := r.files.HostPids[pid]; return h, ok })
}
