package ns

import (
	"fmt"
	"slices"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/proc"
)

// Pid namespaces. The images give every task the pids the dumped root's
// pid namespace sees (criu's: a container's init is pid 1, pstree and
// the core-PID names are in its numbers). A task of a pid namespace
// nested inside the tree has more pids, one per level below; criu 4.2
// refuses to dump those ("Can't dump nested pid namespace"), so they go
// into two extension fields of its pstree entry, which criu and crit
// skip as unknown fields:
//
//	repeated uint32 ns_pids = 100; // the process's pids below the image's level, outermost first
//	repeated uint32 ns_tids = 101; // the same for every thread in turn, threads in pstree order
//	optional uint32 ns_for_children = 102; // the child whose pid namespace its children are born in
//
// The last is the parent that `unshare --pid --fork` leaves: its
// pid_for_children is its child's namespace, which the restore gives it
// again (setns on a pidfd of the child) once the child is made.
const (
	fieldNsPids        = 100
	fieldNsTids        = 101
	fieldNsForChildren = 102
)

// pidLevels is what /proc/PID/status says of a task from the level of the
// dumped root's pid namespace inwards.
type pidLevels struct {
	pids      []int // NSpid from that level on: pids[0] is the image's pid
	pgid, sid int   // at that level, 0 if not visible there
}

// pidTable translates the host pids of a dump into the images' ones.
type pidTable struct {
	level  int // index into NSpid of the root's namespace
	byHost map[int]*pidLevels
	// flat tells whether a process is known to live in stasis' own pid
	// namespace, as the root does: its pids (and its threads') are the
	// images' as they are, with no /proc reads (a process may have ten
	// thousand threads).
	flat func(pid int) bool
	// forChildren is the host pid of the child whose pid namespace pid's
	// children are born in, 0 if it is pid's own.
	forChildren func(pid int) int
}

// setRoot takes the level of the root's pid namespace. A root in a pid
// namespace other than stasis' must be its init, whose tree is the whole
// namespace (as criu needs), unless the namespace is external (pidext.go).
func (t *pidTable) setRoot(pid int, foreign bool, ino uint64, external bool) error {
	st, err := proc.ReadStatus(pid)
	if err != nil {
		return err
	}
	if n := len(st.NSpid); n > 0 {
		t.level = n - 1
		if foreign && !external && st.NSpid[n-1] != 1 {
			return fmt.Errorf("pid %d is pid %d of its pid namespace, whose init is not dumped: dump the namespace's init (pid 1 there) with its whole tree, or name the namespace with --external pid[%d]:KEY; a part of a pid namespace is %w otherwise",
				pid, st.NSpid[n-1], ino, ErrNotSupported)
		}
	}
	return nil
}

func (t *pidTable) get(pid int) (*pidLevels, error) {
	if l := t.byHost[pid]; l != nil {
		return l, nil
	}
	st, err := proc.ReadStatus(pid)
	if err != nil {
		return nil, err
	}
	l := &pidLevels{pids: []int{pid}, pgid: -1, sid: -1}
	if len(st.NSpid) > 0 {
		if len(st.NSpid) <= t.level {
			return nil, fmt.Errorf("pid %d is outside the pid namespace of the dumped root", pid)
		}
		l.pids = st.NSpid[t.level:]
		if len(st.NSpgid) > t.level {
			l.pgid = st.NSpgid[t.level]
		}
		if len(st.NSsid) > t.level {
			l.sid = st.NSsid[t.level]
		}
	}
	if t.byHost == nil {
		t.byHost = map[int]*pidLevels{}
	}
	t.byHost[pid] = l
	return l, nil
}

// check refuses a task whose group or session is not in the root's pid
// namespace, which no pid of the images can name.
func (t *pidTable) check(pid int) error {
	if t.level == 0 && t.flat(pid) {
		return nil
	}
	l, err := t.get(pid)
	if err != nil {
		return err
	}
	if l.sid == 0 || l.pgid == 0 {
		return fmt.Errorf("pid %d: its session or process group leader is outside the dumped root's pid namespace (the namespace's init must call setsid, as criu needs): %w",
			pid, ErrNotSupported)
	}
	return nil
}

func (t *pidTable) imagePid(pid int) int {
	if t.level == 0 && t.flat(pid) {
		return pid
	}
	l, err := t.get(pid)
	if err != nil {
		return pid
	}
	return l.pids[0]
}

// pstree rewrites an entry made of host pids into the images' pids.
func (t *pidTable) pstree(e *pstree.PstreeEntry) error {
	host := int(e.GetPid())
	if t.level == 0 && t.flat(host) && t.forChildren(host) == 0 {
		return nil
	}
	l, err := t.get(host)
	if err != nil {
		return err
	}
	e.Pid = proto.Uint32(uint32(l.pids[0]))
	if e.GetPpid() != 0 {
		e.Ppid = proto.Uint32(uint32(t.imagePid(int(e.GetPpid()))))
	}
	if l.pgid > 0 {
		e.Pgid = proto.Uint32(uint32(l.pgid))
	}
	if l.sid > 0 {
		e.Sid = proto.Uint32(uint32(l.sid))
	}
	depth := len(l.pids) - 1
	var nsTids []int
	for i, tid := range e.Threads {
		lt, err := t.get(int(tid))
		if err != nil {
			return err
		}
		if len(lt.pids) != len(l.pids) {
			return fmt.Errorf("thread %d of pid %d: %d pid namespace levels, its process %d", tid, l.pids[0], len(lt.pids), len(l.pids))
		}
		e.Threads[i] = uint32(lt.pids[0])
		nsTids = append(nsTids, lt.pids[1:]...)
	}
	var b []byte
	if c := t.forChildren(host); c != 0 {
		b = protowire.AppendTag(b, fieldNsForChildren, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(t.imagePid(c)))
	}
	if depth > 0 {
		for _, p := range l.pids[1:] {
			b = protowire.AppendTag(b, fieldNsPids, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(p))
		}
		for _, p := range nsTids {
			b = protowire.AppendTag(b, fieldNsTids, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(p))
		}
	}
	if len(b) > 0 {
		e.ProtoReflect().SetUnknown(b)
	}
	return nil
}

// innerPids reads the extension fields of a pstree entry.
func innerPids(e *pstree.PstreeEntry) (pids, tids []int, forChildren int, err error) {
	b := e.ProtoReflect().GetUnknown()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, 0, protowire.ParseError(n)
		}
		b = b[n:]
		var vals []uint64
		switch {
		case (num == fieldNsPids || num == fieldNsTids || num == fieldNsForChildren) && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return nil, nil, 0, protowire.ParseError(m)
			}
			vals, b = []uint64{v}, b[m:]
		case (num == fieldNsPids || num == fieldNsTids) && typ == protowire.BytesType: // packed
			p, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return nil, nil, 0, protowire.ParseError(m)
			}
			b = b[m:]
			for len(p) > 0 {
				v, k := protowire.ConsumeVarint(p)
				if k < 0 {
					return nil, nil, 0, protowire.ParseError(k)
				}
				vals, p = append(vals, v), p[k:]
			}
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return nil, nil, 0, protowire.ParseError(m)
			}
			b = b[m:]
			continue
		}
		for _, v := range vals {
			if v == 0 || v > 1<<22 {
				return nil, nil, 0, fmt.Errorf("pid %d in a nested pid namespace", v)
			}
			if num == fieldNsForChildren {
				forChildren = int(v)
			} else if num == fieldNsPids {
				pids = append(pids, int(v))
			} else {
				tids = append(tids, int(v))
			}
		}
	}
	return pids, tids, forChildren, nil
}

// rtask is a process of the images as the restore of its pid namespaces
// sees it.
type rtask struct {
	pid    int
	parent *rtask
	levels []int   // pids from the images' level inwards: levels[0] is pid
	tids   [][]int // the same for each thread, in pstree order
	flags  uint64  // clone flags of its namespaces
	// forChildren is the image pid of the child whose pid namespace its
	// children are born in (ns_for_children), 0 for its own.
	forChildren int
}

func (t *rtask) depth() int { return len(t.levels) - 1 }

// loadPids reads the pids of every level of a task and checks them
// against its parent's: a task one level deeper than its parent is the
// init of a new pid namespace (pid 1 there).
func loadPids(pe *pstree.PstreeEntry, parent *rtask) (*rtask, error) {
	t := &rtask{pid: int(pe.GetPid()), parent: parent}
	inner, tids, forChildren, err := innerPids(pe)
	if err != nil {
		return nil, fmt.Errorf("pid %d: pstree extension: %w", t.pid, err)
	}
	t.levels = append([]int{t.pid}, inner...)
	t.forChildren = forChildren
	d := len(inner)
	threads := pe.GetThreads()
	if d > 0 && len(tids) != d*len(threads) {
		return nil, fmt.Errorf("pid %d: %d nested tids for %d threads at %d levels", t.pid, len(tids), len(threads), d)
	}
	for i, tid := range threads {
		lv := []int{int(tid)}
		if d > 0 {
			lv = append(lv, tids[i*d:(i+1)*d]...)
		}
		t.tids = append(t.tids, lv)
	}
	pd := 0
	if parent != nil {
		pd = parent.depth()
	}
	switch {
	case d == pd:
	case d == pd+1 && parent != nil:
		if inner[d-1] != 1 {
			return nil, fmt.Errorf("pid %d starts a nested pid namespace as pid %d, not 1", t.pid, inner[d-1])
		}
		t.flags |= cloneNewPid
	default:
		return nil, fmt.Errorf("pid %d is %d pid namespaces deep, its parent %d", t.pid, d, pd)
	}
	return t, nil
}

// setTid is clone3's set_tid for levels: the innermost pid first.
func setTid(levels []int) []int {
	s := slices.Clone(levels)
	slices.Reverse(s)
	return s
}
