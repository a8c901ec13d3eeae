package pstree

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
)

// Proc is one process of the tree as a restore creates it. It is the
// dumped tree (pstree.img), except that a session or group whose leader
// had exited gets a helper task with the leader's pid, which creates the
// members and then exits (AddHelpers).
type Proc struct {
	Entry    *pstree.PstreeEntry
	Parent   *Proc
	Children []*Proc
	Zombie   bool
	Helper   bool
}

func (p *Proc) Pid() int  { return int(p.Entry.GetPid()) }
func (p *Proc) Sid() int  { return int(p.Entry.GetSid()) }
func (p *Proc) Pgid() int { return int(p.Entry.GetPgid()) }

// Live reports whether the process runs after the restore.
func (p *Proc) Live() bool { return !p.Zombie && !p.Helper }

// Walk calls f for p and its descendants, parents first.
func (p *Proc) Walk(f func(*Proc) error) error {
	if err := f(p); err != nil {
		return err
	}
	for _, c := range p.Children {
		if err := c.Walk(f); err != nil {
			return err
		}
	}
	return nil
}

// AddChild makes c a child of p, after the ones it has.
func (p *Proc) AddChild(c *Proc) {
	c.Parent = p
	p.Children = append(p.Children, c)
}

// ReadImage reads pstree.img: every process, parents first, the root
// first of all.
func ReadImage(dir *images.Dir) ([]*pstree.PstreeEntry, error) {
	trees, err := images.ReadAll(dir, "pstree.img", func() *pstree.PstreeEntry { return &pstree.PstreeEntry{} })
	if err != nil {
		return nil, err
	}
	if len(trees) == 0 {
		return nil, inconsistent("no task")
	}
	return trees, nil
}

// Tree is the dumped tree as it is read, in pstree.img order: the root
// first, every process after its parent.
type Tree struct {
	Root  *Proc
	byPid map[int]*Proc
}

// Add puts p, the next process of pstree.img, under its parent.
func (t *Tree) Add(p *Proc) error {
	if t.byPid == nil {
		t.byPid = map[int]*Proc{}
	}
	if t.byPid[p.Pid()] != nil {
		return inconsistent("pid %d listed twice", p.Pid())
	}
	t.byPid[p.Pid()] = p
	if t.Root == nil {
		t.Root = p
		return nil
	}
	ppid := p.Entry.GetPpid()
	parent := t.byPid[int(ppid)]
	if parent == nil {
		return inconsistent("pid %d: parent %d is not listed before it", p.Pid(), ppid)
	}
	if parent.Zombie {
		return inconsistent("pid %d: parent %d is a zombie", p.Pid(), ppid)
	}
	parent.AddChild(p)
	return nil
}

// inconsistent is the error about a pstree.img that decodes but
// contradicts itself or the other images.
func inconsistent(format string, args ...any) error {
	return fmt.Errorf("image pstree.img: %w: %s", images.ErrInconsistent, fmt.Sprintf(format, args...))
}

// AddHelpers prepares the tree for sessions and process groups whose
// leader is gone. A process joins a session only by being born in it, and
// a group only if the group exists, so restore recreates such a leader as
// a helper task with its pid: the helper starts the session (or group),
// the members are created under it or join it, and the helper exits
// before the tree runs. Members that had been re-parented to the root
// (orphans) are born under the session helper and re-parented to the
// root again when it exits, as criu does. all is every process of the
// images in pstree order, the root first; AddHelpers returns the helpers
// it added to the tree.
func AddHelpers(all []*Proc, shellJob bool) ([]*Proc, error) {
	pids := map[int]bool{}
	for _, ti := range all {
		for _, tid := range ti.Entry.GetThreads() {
			pids[int(tid)] = true
		}
		pids[ti.Pid()] = true
	}
	root := all[0]
	outsideSid := !pids[root.Sid()]
	if outsideSid && !shellJob {
		return nil, fmt.Errorf("the root pid %d belongs to session %d, which is not in the images: %w (restore with -j/--shell-job)",
			root.Pid(), root.Sid(), images.ErrInconsistent)
	}
	helpers := map[int]*Proc{}
	var added []*Proc
	helper := func(pid, sid, pgid int, parent *Proc) *Proc {
		if h := helpers[pid]; h != nil {
			return h
		}
		h := &Proc{Helper: true, Parent: parent, Entry: &pstree.PstreeEntry{
			Pid: proto.Uint32(uint32(pid)), Ppid: proto.Uint32(uint32(parent.Pid())),
			Pgid: proto.Uint32(uint32(pgid)), Sid: proto.Uint32(uint32(sid)),
		}}
		// Helpers go first among their siblings: they must exist before
		// the members that join them.
		parent.Children = append([]*Proc{h}, parent.Children...)
		helpers[pid] = h
		added = append(added, h)
		return h
	}
	for _, ti := range all[1:] {
		external := func(id, rootID int) bool { return outsideSid && id == rootID }
		if sid := ti.Sid(); !pids[sid] && !external(sid, root.Sid()) {
			h := helper(sid, sid, sid, root)
			if ti.Parent == root || ti.Parent.Sid() != sid {
				moveUnder(ti, h)
			}
		}
		if pgid := ti.Pgid(); !pids[pgid] && !external(pgid, root.Pgid()) {
			if helpers[pgid] == nil && ti.Parent.Sid() != ti.Sid() {
				return nil, fmt.Errorf("pid %d: group %d has no leader and no member's parent is in session %d: %w", ti.Pid(), pgid, ti.Sid(), images.ErrInconsistent)
			}
			helper(pgid, ti.Sid(), pgid, ti.Parent)
		}
	}
	return added, nil
}

func moveUnder(ti, newParent *Proc) {
	old := ti.Parent
	for i, c := range old.Children {
		if c == ti {
			old.Children = append(old.Children[:i], old.Children[i+1:]...)
			break
		}
	}
	ti.Parent = newParent
	newParent.Children = append(newParent.Children, ti)
}

// AllPids lists every pid and tid the restore of the tree under root
// will create.
func AllPids(root *Proc) []int {
	var out []int
	_ = root.Walk(func(ti *Proc) error {
		out = append(out, ti.Pid())
		if ti.Zombie {
			// A zombie has no threads to create; criu 4.2 writes an
			// uninitialised id as its thread.
			return nil
		}
		for _, tid := range ti.Entry.GetThreads() {
			if int(tid) != ti.Pid() {
				out = append(out, int(tid))
			}
		}
		return nil
	})
	return out
}
