package pstree

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
)

// AddPidHelper adds a helper task with pid under the root of the tree
// (all, the root first): a process that had ended and been reaped when
// the tree was dumped but whose /proc directory a task of it still had
// open (a cwd or an fd inside /proc/PID). The helper lives while the
// files are opened, then exits and is reaped (EndHelper), as criu's
// dead-pid helper does, so that the reopened files are again those of a
// process gone. It returns the helper, or an error for a pid the tree
// itself uses.
func AddPidHelper(all []*Proc, pid int) (*Proc, error) {
	for _, p := range all {
		if p.Pid() == pid {
			if p.Helper {
				return p, nil
			}
			return nil, fmt.Errorf("a file of /proc/%d, a process that had ended when dumped: pid %d is a process of the tree: %w", pid, pid, images.ErrInconsistent)
		}
		for _, tid := range p.Entry.GetThreads() {
			if int(tid) == pid {
				return nil, fmt.Errorf("a file of /proc/%d, a process that had ended when dumped: pid %d is a thread of pid %d: %w", pid, pid, p.Pid(), images.ErrInconsistent)
			}
		}
	}
	root := all[0]
	h := &Proc{Helper: true, Parent: root, Entry: &pstree.PstreeEntry{
		Pid: proto.Uint32(uint32(pid)), Ppid: proto.Uint32(uint32(root.Pid())),
		Pgid: proto.Uint32(uint32(root.Pgid())), Sid: proto.Uint32(uint32(root.Sid())),
	}}
	root.Children = append([]*Proc{h}, root.Children...)
	return h, nil
}
