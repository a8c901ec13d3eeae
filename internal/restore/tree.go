package restore

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"google.golang.org/protobuf/proto"
)

// addHelpers prepares the tree for sessions and process groups whose
// leader is gone. A process joins a session only by being born in it, and
// a group only if the group exists, so restore recreates such a leader as
// a helper task with its pid: the helper starts the session (or group),
// the members are created under it or join it, and the helper exits
// before the tree runs. Members that had been re-parented to the root
// (orphans) are born under the session helper and re-parented to the
// root again when it exits, as criu does.
func (s *imageSet) addHelpers(shellJob bool) error {
	pids := map[int]bool{}
	for _, ti := range s.all {
		for _, tid := range ti.pstree.GetThreads() {
			pids[int(tid)] = true
		}
		pids[ti.pid()] = true
	}
	root := s.root
	outsideSid := !pids[root.sid()]
	if outsideSid && !shellJob {
		return fmt.Errorf("the root pid %d belongs to session %d, which is not in the images: %w (restore with -j/--shell-job)",
			root.pid(), root.sid(), ErrBadImage)
	}
	helpers := map[int]*taskImages{}
	helper := func(pid, sid, pgid int, parent *taskImages) *taskImages {
		if h := helpers[pid]; h != nil {
			return h
		}
		h := &taskImages{helper: true, parent: parent, pstree: &pstree.PstreeEntry{
			Pid: proto.Uint32(uint32(pid)), Ppid: proto.Uint32(uint32(parent.pid())),
			Pgid: proto.Uint32(uint32(pgid)), Sid: proto.Uint32(uint32(sid)),
		}}
		// Helpers go first among their siblings: they must exist before
		// the members that join them.
		parent.children = append([]*taskImages{h}, parent.children...)
		helpers[pid] = h
		return h
	}
	for _, ti := range s.all[1:] {
		external := func(id, rootID int) bool { return outsideSid && id == rootID }
		if sid := ti.sid(); !pids[sid] && !external(sid, root.sid()) {
			h := helper(sid, sid, sid, root)
			if ti.parent == root || ti.parent.sid() != sid {
				moveUnder(ti, h)
			}
		}
		if pgid := ti.pgid(); !pids[pgid] && !external(pgid, root.pgid()) {
			if helpers[pgid] == nil && ti.parent.sid() != ti.sid() {
				return fmt.Errorf("pid %d: group %d has no leader and no member's parent is in session %d: %w", ti.pid(), pgid, ti.sid(), ErrBadImage)
			}
			helper(pgid, ti.sid(), pgid, ti.parent)
		}
	}
	return nil
}

func moveUnder(ti, newParent *taskImages) {
	old := ti.parent
	for i, c := range old.children {
		if c == ti {
			old.children = append(old.children[:i], old.children[i+1:]...)
			break
		}
	}
	ti.parent = newParent
	newParent.children = append(newParent.children, ti)
}

// allPids lists every pid and tid the restore will create.
func (s *imageSet) allPids() []int {
	var out []int
	_ = s.root.walk(func(ti *taskImages) error {
		out = append(out, ti.pid())
		if ti.zombie {
			// A zombie has no threads to create; criu 4.2 writes an
			// uninitialised id as its thread.
			return nil
		}
		for _, tid := range ti.pstree.GetThreads() {
			if int(tid) != ti.pid() {
				out = append(out, int(tid))
			}
		}
		return nil
	})
	return out
}
