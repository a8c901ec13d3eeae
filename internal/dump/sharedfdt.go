package dump

import (
	"fmt"

	"github.com/stasis-cr/stasis/internal/linux"
)

// Shared fd tables: a process cloned with CLONE_FILES but not
// CLONE_THREAD shares its parent's fd table. As in criu, it is kept as
// the same files id in ids-PID.img (one fdinfo-ID.img, the parent's),
// and the restore clones it with CLONE_FILES from its parent, whose fds
// fill the table. A table shared with a process other than the parent
// (a sibling, after the parent unshared) is refused: no clone can make
// it.

// sharesParentFiles tells whether p's fd table is its parent's.
func sharesParentFiles(p *process) (bool, error) {
	if p.parent == nil || p.parent.ids == nil {
		return false, nil
	}
	o, err := linux.KcmpOrder(p.pid, p.parent.pid, linux.KcmpFiles, 0, 0)
	if err != nil {
		return false, fmt.Errorf("compare the fd table of pid %d with its parent %d's: %w", p.pid, p.parent.pid, err)
	}
	return o == 0, nil
}
