package restore

import (
	"golang.org/x/sys/unix"
)

// Shared fd tables (criu's shared fdt): a process whose files id is its
// parent's was cloned with CLONE_FILES and not CLONE_THREAD. It is
// cloned so again, from its parent; the parent's fds fill the table, the
// child restores none of its own. The channel to stasis, in the shared
// table too, is closed by the last of them to restore its files (the
// others still need it for their cwd and root).

// sharesParentFiles tells whether img's fd table is its parent's.
func (r *restorer) sharesParentFiles(img *taskImages) bool {
	if img.Parent == nil || !img.Live() || img.Parent.Helper {
		return false
	}
	p := r.imgs.of(img.Parent)
	return p != nil && p.ids != nil && img.ids != nil && p.Live() && img.ids.GetFilesId() == p.ids.GetFilesId()
}

// filesFlag is the clone flag of img's fd table: CLONE_FILES if it is its
// parent's.
func (r *restorer) filesFlag(img *taskImages) uint64 {
	if r.sharesParentFiles(img) {
		return unix.CLONE_FILES
	}
	return 0
}

// closesChannel tells whether tr is the last process restoring its files
// in its fd table: it closes the channel, which the others of the table
// (parents first, in r.procs order) still need until then.
func (r *restorer) closesChannel(tr *taskRestorer) bool {
	own := r.fdtOwner(tr.img)
	after := false
	for _, o := range r.procs {
		if o == tr {
			after = true
			continue
		}
		if after && o.img.Live() && r.fdtOwner(o.img) == own {
			return false
		}
	}
	return true
}

// fdtOwner is the process whose fd table img has: its nearest ancestor
// that does not share its parent's.
func (r *restorer) fdtOwner(img *taskImages) *taskImages {
	for r.sharesParentFiles(img) {
		img = r.imgs.of(img.Parent)
	}
	return img
}
