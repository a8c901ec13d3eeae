package ns

import (
	"fmt"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/mount"
	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/remote"
)

// Mount namespaces nested in the container's (a task of the tree that
// unshared CLONE_NEWNS): dumped as trees of their own, restored by the
// task that made each, cloned with CLONE_NEWNS (internal/mount/nested.go).

// nestedMnt is a mount namespace nested in the dumped root's.
type nestedMnt struct {
	pid  int // host pid of the first task seen in it: the one that made it
	tree *mount.Tree
}

// checkNestedMnt accepts process pid in mount namespace ino, other than
// the root's: when the root has a namespace of its own and pid made ino
// (its parent is in another) or inherited it from its parent.
func (d *Dumper) checkNestedMnt(pid int, ino uint64) error {
	if d.mounts == nil {
		return fmt.Errorf("pid %d is in another mount namespace than the dumped root (pid %d), which is in stasis': a mount namespace nested in the host's is %w yet",
			pid, d.root, ErrNotSupported)
	}
	st, err := proc.ReadStat(pid)
	if err != nil {
		return err
	}
	if n := d.nestedMnt[ino]; n != nil {
		if pin, ok := d.tasks[st.PPid]; !ok || pin[kMnt] != ino {
			return fmt.Errorf("pid %d is in the mount namespace pid %d made, but its parent %d is not (it joined it with setns): %w yet",
				pid, n.pid, st.PPid, ErrNotSupported)
		}
		return nil
	}
	tree, err := mount.Read(pid, d.MountOpts)
	if err != nil {
		return err
	}
	if err := d.mounts.Nest(tree); err != nil {
		return err
	}
	if d.nestedMnt == nil {
		d.nestedMnt = map[uint64]*nestedMnt{}
	}
	d.nestedMnt[ino] = &nestedMnt{pid: pid, tree: tree}
	return nil
}

// writeNestedMnt writes the tree of each nested mount namespace.
func (d *Dumper) writeNestedMnt(dir *images.Dir) error {
	for ino, n := range d.nestedMnt {
		if err := n.tree.Write(dir, d.ids.id(kMnt, ino)); err != nil {
			return fmt.Errorf("nested mount namespace of pid %d: %w", n.pid, err)
		}
	}
	return nil
}

// rnestedMnt is a nested mount namespace of the images: its image, and
// once made, the host pid of the task that made it.
type rnestedMnt struct {
	im   *mount.Image
	host int
}

// loadNestedMnt reads the mount namespace id of task t (whose parent is
// in namespace parent) when it is not its parent's: t makes it
// (CLONE_NEWNS). A namespace other than the parent's seen before (joined
// with setns) is refused.
func (r *Restorer) loadNestedMnt(t *rtask, id, parent uint32) error {
	if id == 0 || id == parent {
		return nil
	}
	if r.mnt == nil {
		return fmt.Errorf("image ids-%d.img: pid %d is in another mount namespace than its parent, and the root has none of its own: %w", t.pid, t.pid, ErrNotSupported)
	}
	if r.nestedMnt[id] != nil || id == r.rootMntID {
		return fmt.Errorf("image ids-%d.img: pid %d is in mount namespace %d, which its parent is not in but another task is (joined with setns): %w yet", t.pid, t.pid, id, ErrNotSupported)
	}
	im, err := mount.Load(r.dir, id)
	if err != nil {
		return err
	}
	if r.nestedMnt == nil {
		r.nestedMnt = map[uint32]*rnestedMnt{}
		r.mntOf = map[int]uint32{}
	}
	r.nestedMnt[id] = &rnestedMnt{im: im}
	r.mntOf[t.pid] = id
	t.flags |= kinds[kMnt].flag
	return nil
}

// prepareNestedMnt resolves the mount options for each nested namespace.
func (r *Restorer) prepareNestedMnt(opts mount.RestoreOptions) error {
	for _, n := range r.nestedMnt {
		if err := n.im.PrepareNested(opts); err != nil {
			return err
		}
	}
	return nil
}

// mountNested builds the nested mount namespace task t made, if it made
// one, from the namespace of its parent (the root's or another nested).
func (r *Restorer) mountNested(t remote.Task) error {
	id, ok := r.mntOf[t.Pid()]
	if !ok {
		return nil
	}
	n := r.nestedMnt[id]
	parent := r.mnt
	for p := r.tasks[t.Pid()].parent; p != nil; p = p.parent {
		if pid, ok := r.mntOf[p.pid]; ok {
			parent = r.nestedMnt[pid].im
			break
		}
	}
	if err := n.im.BuildNested(t, parent); err != nil {
		return err
	}
	n.host = t.HostPid()
	return nil
}

// MountRootOf is where stasis reaches the root of the mount namespace
// that mount mntID is in (a file's mnt_id), for the files of tasks in a
// nested one; the root's (MountRoot) for any other.
func (r *Restorer) MountRootOf(mntID int32, root string) string {
	for _, n := range r.nestedMnt {
		if n.host != 0 && n.im.Has(mntID) {
			return fmt.Sprintf("/proc/%d/root", n.host)
		}
	}
	return root
}
