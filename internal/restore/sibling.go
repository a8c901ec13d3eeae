package restore

import (
	"github.com/stasis-cr/stasis/internal/ptrace"
	"golang.org/x/sys/unix"
)

// siblingFlag is CLONE_PARENT for the task a sibling restore clones from
// its puppet (the root, or the init of a new pid namespace): the puppet is
// the process that split, stasis' parent (puppet/split.go), or a process
// that stasis' parent sees as its child (puppet/sibling.go), and the task
// is born that parent's child.
func (r *restorer) siblingFlag(from *ptrace.Task) uint64 {
	if r.opts.Sibling && r.puppet != nil && from == r.puppet.Tr {
		return unix.CLONE_PARENT
	}
	return 0
}
