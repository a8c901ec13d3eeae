package dump

import (
	"fmt"

	"github.com/stasis-cr/stasis/internal/linux"
)

// Shared fs info: a process cloned with CLONE_FS but not CLONE_THREAD
// shares its parent's root, cwd and umask. It is kept as the parent's fs
// id in ids-PID.img (fs-PID.img holds the same values for both), and the
// restore clones it with CLONE_FS from its parent. criu 4.2 refuses it
// ("Can't make FS id"); fs info shared with a process other than the
// parent is refused by stasis too: no clone can make it.

// sharesParentFS tells whether p's fs info is its parent's.
func sharesParentFS(p *process) (bool, error) {
	if p.parent == nil || p.parent.ids == nil {
		return false, nil
	}
	o, err := linux.KcmpOrder(p.pid, p.parent.pid, linux.KcmpFS, 0, 0)
	if err != nil {
		return false, fmt.Errorf("compare the fs info of pid %d with its parent %d's: %w", p.pid, p.parent.pid, err)
	}
	return o == 0, nil
}
