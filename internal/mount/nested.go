package mount

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/remote"
)

// Mount namespaces nested in the tree's: a task of the container that
// unshared CLONE_NEWNS (`unshare -m`) has a copy of the container's tree,
// changed since (mounts made, unmounted, propagation changed). Each is
// dumped as a tree of its own (mountpoints-ID.img, tmpfs contents for
// the super blocks the container's tree has not), and restored in the
// task that made it, cloned with CLONE_NEWNS from its parent: its new
// namespace is a copy of the restored container's, which BuildNested
// turns into the dumped one. So the nested tree must keep the
// container's root (a namespace that pivot_root'ed elsewhere is refused).

// Nest adds n, the tree of a mount namespace nested in t's, to t: Has
// answers for its mounts too (files' mnt_id), and a tmpfs whose contents
// t dumps is not dumped again. It refuses a nested tree whose root is
// not t's.
func (t *Tree) Nest(n *Tree) error {
	r, nr := t.root.e, n.root.e
	if nr.GetRootDev() != r.GetRootDev() || nr.GetRoot() != r.GetRoot() {
		return fmt.Errorf("mount namespace of pid %d, nested in the container's: its root is %s on %s, not the container's %s on %s (it pivot_root'ed): %w",
			n.pid, nr.GetRoot(), devName(nr.GetRootDev()), r.GetRoot(), devName(r.GetRootDev()), ErrNotSupported)
	}
	tarred := map[uint32]bool{}
	for _, m := range t.mounts {
		if m.tar {
			tarred[m.e.GetRootDev()] = true
		}
	}
	for _, o := range t.nested {
		for _, m := range o.mounts {
			if m.tar {
				tarred[m.e.GetRootDev()] = true
			}
		}
	}
	for _, m := range n.mounts {
		if m.tar && tarred[m.e.GetRootDev()] {
			m.tar = false
		}
		// criu's format: the copy of an external mount is a bind of
		// the container's, which alone holds the key (criu restores a
		// nested mount with a key as external, the copy of the tree
		// lost).
		m.e.ExtKey = nil
	}
	t.nested = append(t.nested, n)
	return nil
}

// Nested tells whether mount namespaces are nested in t's.
func (t *Tree) Nested() bool { return len(t.nested) > 0 }

// BuildNested makes the tree of im, a mount namespace nested in the
// container's, in task t: cloned with CLONE_NEWNS from a task of the
// namespace of image parent (built already), t has a copy of that tree.
// Each mount of im is matched with the copy of a mount of parent (the
// same mountpoint, file system and root, under the match of its parent);
// the copies that have no match are unmounted, the mounts that have none
// are made as Build makes them, and every mount of im gets its
// propagation and flags. The work runs on a stasis thread that joined
// t's namespaces; a failure leaves changes only in t's namespace, which
// dies with t.
func (im *Image) BuildNested(t remote.Task, parent *Image) error {
	// The thread's /proc is the container's, where it has no pid.
	proc, err := os.Open("/proc")
	if err != nil {
		return fmt.Errorf("restore the nested mount namespace of pid %d: %w", t.Pid(), err)
	}
	defer proc.Close()
	b := &builder{im: im, yard: "/", task: t, calls: make(chan func()), proc: proc}
	if err := b.run(func() error { return b.nested(parent) }); err != nil {
		return fmt.Errorf("restore the nested mount namespace of pid %d: %w", t.Pid(), err)
	}
	return nil
}

// PrepareNested is Prepare for a nested namespace's image: its mounts
// are mostly copies of the container's, made by the clone, so no source
// is needed but for an external key (criu's images have none there); a
// mount the restore must make without a source fails then, named.
func (im *Image) PrepareNested(opts RestoreOptions) error {
	im.opts = opts
	var err error
	if im.keys, err = opts.restoreKeys(); err != nil {
		return err
	}
	if im.host, err = proc.ReadMountinfo(os.Getpid()); err != nil {
		return fmt.Errorf("stasis' own mounts: %w", err)
	}
	for _, m := range im.mounts {
		if m.e.GetExtKey() != "" {
			if m.source, err = im.external(m); err != nil {
				return err
			}
		}
	}
	return nil
}

// match pairs the mounts of im with those of parent (see BuildNested).
func (im *Image) match(parent *Image) (map[*rmount]*rmount, error) {
	pairs := map[*rmount]*rmount{}
	used := map[*rmount]bool{}
	same := func(n, p *rmount) bool {
		return n.e.GetMountpoint() == p.e.GetMountpoint() && n.e.GetRootDev() == p.e.GetRootDev() && n.e.GetRoot() == p.e.GetRoot()
	}
	if !same(im.root, parent.root) {
		return nil, fmt.Errorf("image %s: the root mount (%s on %s) is not the container's: %w", im.name, im.root.e.GetRoot(), devName(im.root.e.GetRootDev()), ErrNotSupported)
	}
	pairs[im.root], used[parent.root] = parent.root, true
	// Parents come before their children in mountinfo order.
	for _, n := range im.mounts {
		if n == im.root {
			continue
		}
		pp := pairs[n.parent]
		if pp == nil {
			continue
		}
		for _, p := range parent.mounts {
			if !used[p] && p.parent == pp && same(n, p) {
				pairs[n], used[p] = p, true
				break
			}
		}
	}
	return pairs, nil
}

// nested runs on the thread in t's namespace (see BuildNested).
func (b *builder) nested(parent *Image) error {
	im := b.im
	pairs, err := im.match(parent)
	if err != nil {
		return err
	}
	matched := map[*rmount]*rmount{} // a mount of parent -> its match
	for n, p := range pairs {
		matched[p] = n
		n.target = n.e.GetMountpoint()
		if err := b.opened(n, fmt.Sprintf("mount %d at %s", n.e.GetMntId(), n.target)); err != nil {
			return err
		}
	}
	// Propagation first: an unmount or a mount under a mount still
	// shared with the container's would reach the container's too.
	for _, n := range im.mounts {
		p := pairs[n]
		if p == nil {
			continue
		}
		if n.e.GetSharedId() != 0 && n.e.GetSharedId() != p.e.GetSharedId() {
			// Shared in a group of its own, not the container's mount's.
			if err := unix.Mount("", n.target, "", unix.MS_PRIVATE, ""); err != nil {
				return fmt.Errorf("mount %d at %s: %w", n.e.GetMntId(), n.target, os.NewSyscallError("mount --make-private", err))
			}
		}
		if err := b.propagation(n, fmt.Sprintf("mount %d at %s", n.e.GetMntId(), n.target)); err != nil {
			return err
		}
	}
	// The copies the nested namespace had unmounted, children first
	// (an unmount takes what is below with it).
	for i := len(parent.mounts) - 1; i >= 0; i-- {
		p := parent.mounts[i]
		if matched[p] != nil || (p.parent != nil && matched[p.parent] == nil) {
			continue
		}
		mp := p.e.GetMountpoint()
		if err := b.sharedParent(matched[p.parent], "unmount", mp); err != nil {
			return err
		}
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount the copy of mount %d at %s: %w", p.e.GetMntId(), mp, os.NewSyscallError("umount", err))
		}
	}
	var made []*rmount
	for _, n := range im.mounts {
		if pairs[n] != nil {
			continue
		}
		if n.parent.fd == nil {
			return fmt.Errorf("mount %d at %s: its parent %d is never mounted: %w", n.e.GetMntId(), n.e.GetMountpoint(), n.e.GetParentMntId(), ErrBadImage)
		}
		if err := b.sharedParent(n.parent, "mount", n.e.GetMountpoint()); err != nil {
			return err
		}
		n.target = n.e.GetMountpoint()
		if err := b.mountOne(n); err != nil {
			return err
		}
		made = append(made, n)
	}
	for i := len(made) - 1; i >= 0; i-- {
		if err := b.flags(made[i]); err != nil {
			return err
		}
	}
	// A copy the nested namespace remounted (read-only, nosuid, ...):
	// the mount's flags alone, its super block is the container's too.
	for n, p := range pairs {
		fl, pfl := n.e.GetFlags()&^uint32(propagation), p.e.GetFlags()&^uint32(propagation)
		if fl == pfl {
			continue
		}
		err := b.atFd(n, func(p string) error { return unix.Mount("", p, "", uintptr(unix.MS_REMOUNT|unix.MS_BIND|fl), "") })
		if err != nil {
			return fmt.Errorf("mount %d at %s: %w", n.e.GetMntId(), n.target, os.NewSyscallError(fmt.Sprintf("remount with flags %#x", fl), err))
		}
	}
	return nil
}

// sharedParent refuses to mount or unmount at mp under p while p is in a
// peer group: the change would propagate to its peers, the container's
// mounts among them, which have their own tree already.
func (b *builder) sharedParent(p *rmount, what, mp string) error {
	if p == nil {
		return nil
	}
	if g, _ := b.current(p); g != 0 {
		return fmt.Errorf("%s at %s: under mount %d at %s, shared (peer group %d) with mounts of other namespaces, which would get it too: %w",
			what, mp, p.e.GetMntId(), p.e.GetMountpoint(), g, ErrNotSupported)
	}
	return nil
}
