package restore

import (
	"github.com/stasis-cr/stasis/internal/ptrace"
	"golang.org/x/sys/unix"
)

// siblingFlag is CLONE_PARENT for the task a sibling restore clones from
// its puppet (the root, or the init of a new pid namespace): the puppet is
// stasis' parent itself or a child of it, and so becomes that task (see
// puppet/split.go).
func (r *restorer) siblingFlag(from *ptrace.Task) uint64 {
	if r.opts.Sibling && r.puppet != nil && from == r.puppet.Tr {
		return unix.CLONE_PARENT
	}
	return 0
}
