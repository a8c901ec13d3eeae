package files

import (
	"fmt"
)

// MappedSocket is the file id of the socket mapped at start-end of pid
// (the ring of a packet socket): the id of the fd of the tree that holds
// it, recorded before the memory of pid is (fds are dumped first, parents
// before children). A socket has one open file description (it cannot be
// opened again), so its device and inode name it. A ring whose socket no
// fd holds any more cannot be set up again: criu refuses it too.
func (t *Table) MappedSocket(pid int, start, end, dev, ino uint64) (uint32, error) {
	if set := t.descs[[2]uint64{dev, ino}]; set != nil {
		if ds := set.Values(); len(ds) > 0 {
			return ds[0].id, nil
		}
	}
	return 0, fmt.Errorf("vma %#x-%#x of pid %d maps socket:[%d], which no fd of the tree holds: %w (its ring cannot be set up again without the socket; keep an fd of it open)",
		start, end, pid, ino, ErrUnsupported)
}
