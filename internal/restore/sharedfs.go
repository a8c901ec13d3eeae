package restore

import (
	"golang.org/x/sys/unix"
)

// Shared fs info (dump/sharedfs.go): a process whose fs id is its
// parent's was cloned with CLONE_FS and not CLONE_THREAD. It is cloned so
// again from its parent; both restore the same root, cwd and umask from
// their fs images, the second time changing nothing.

// fsFlag is the clone flag of img's fs info: CLONE_FS if it is its
// parent's.
func (r *restorer) fsFlag(img *taskImages) uint64 {
	if img.Parent == nil || !img.Live() || img.Parent.Helper {
		return 0
	}
	p := r.imgs.of(img.Parent)
	if p != nil && p.ids != nil && img.ids != nil && p.Live() && img.ids.GetFsId() == p.ids.GetFsId() {
		return unix.CLONE_FS
	}
	return 0
}
