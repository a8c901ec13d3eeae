package files

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/proc"
)

// ErrUnsupported is wrapped by errors about fds of a kind stasis cannot
// checkpoint yet (see UnsupportedError). It is linux.ErrNotSupported,
// stasis' one "not supported".
var ErrUnsupported = linux.ErrNotSupported

// Table is the file table of a dump: every FileEntry with a unique id.
type Table struct {
	Files  []*fdinfo.FileEntry
	nextID uint32
	paths  map[string]uint32 // path-only entries (mappings), shared
	// open descriptions seen so far, by device and inode, to find fds
	// that share one (dup, fork): they must share it again after restore.
	descs map[[2]uint64]*linux.KcmpSet[*desc]
	// memfds seen mapped, by inode
	memfds map[uint64]*memfdFile
	state  map[string]any // per-kind state, see stateOf
	pids   map[int]bool   // the processes whose fds are in the table
	// Tasks are the pids and tids of the dumped tree, set by the dump
	// once it has seized it (a pidfd may name any of them).
	Tasks map[int]bool
	// finish run once the tree is killed or goes on (see Finish).
	finish []func(killed bool) error
	// beforeKill run just before the dump kills the tree (see BeforeKill).
	beforeKill []func() error
	// NsID gives the id and CLONE_NEW* flag of the namespace of a kind
	// ("net") and inode, set by the dump (internal/ns): nsfile.go.
	NsID func(kind string, ino uint64) (uint32, uint32, error)
	// PagesID hands out the N of pages-N.img, shared with memory.
	PagesID func() int
	Opts    DumpOptions
	// Refused are the reasons the dump would fail, one per resource, that
	// a preflight found (see Refuse).
	Refused []error
	// Mounts is the tree's own mount namespace, nil if it has none
	// (mountns.go).
	Mounts MountNS
}

// Refuse returns err, which ends a dump; a preflight (Opts.Preflight)
// records it in Refused instead and gets nil, so that it goes on to the
// next resource and lists them all. Refuse(nil) is nil.
func (t *Table) Refuse(err error) error {
	if err == nil || !t.Opts.Preflight {
		return err
	}
	t.Refused = append(t.Refused, err)
	return nil
}

// desc is the entry of an open file description already in the table.
type desc struct {
	id  uint32
	typ fdinfo.FdTypes
}

// NewTable returns an empty table.
func NewTable(opts DumpOptions, pagesID func() int) *Table {
	if opts.GhostLimit == 0 {
		opts.GhostLimit = DefaultGhostLimit
	}
	return &Table{nextID: 1, PagesID: pagesID, Opts: opts, paths: map[string]uint32{}, descs: map[[2]uint64]*linux.KcmpSet[*desc]{},
		memfds: map[uint64]*memfdFile{}, state: map[string]any{}, pids: map[int]bool{}}
}

// shared returns the fd already recorded that refers to the same open
// file description as fd of pid, as kcmp(KCMP_FILE) tells, or else a
// function that records fd as the first of its description.
func (t *Table) shared(pid, fd int, st *unix.Stat_t) (*desc, bool, func(*desc), error) {
	key := [2]uint64{st.Dev, st.Ino}
	set := t.descs[key]
	if set == nil {
		set = &linux.KcmpSet[*desc]{Type: linux.KcmpFile}
		t.descs[key] = set
	}
	d, at, found, err := set.Find(pid, fd)
	if err != nil {
		return nil, false, nil, fmt.Errorf("compare fd %d of pid %d with the fds of its file: %w", fd, pid, err)
	}
	return d, found, func(d *desc) { set.Insert(at, pid, fd, d) }, nil
}

// Add records fe, an entry no fd of the tree has (a FIFO's path, the
// peer of a unix socket outside the tree), with the next id, and
// returns the id.
func (t *Table) Add(fe *fdinfo.FileEntry) uint32 {
	id := t.nextID
	t.nextID++
	t.put(fe, id)
	return id
}

// put records fe with an id reserved before. Kind dumpers are told the
// id in advance (Fd.ID) and have already put it in their sub-message.
func (t *Table) put(fe *fdinfo.FileEntry, id uint32) {
	fe.Id = proto.Uint32(id)
	if fe.Reg != nil {
		fe.Reg.Id = proto.Uint32(id)
	}
	t.Files = append(t.Files, fe)
}

// DumpFds records every fd of pid and returns its fd table.
func (t *Table) DumpFds(pid int) ([]*fdinfo.FdinfoEntry, error) {
	t.pids[pid] = true
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list fds of pid %d: %w", pid, err)
	}
	fds := make([]int, 0, len(ents))
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fds = append(fds, fd)
	}
	slices.Sort(fds)
	var out []*fdinfo.FdinfoEntry
	for _, fd := range fds {
		e, err := t.dumpFd(pid, fd)
		if err != nil {
			if err := t.Refuse(err); err != nil {
				return nil, err
			}
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// Pids returns the processes whose fds are in the table, in order.
func (t *Table) Pids() []int {
	pids := make([]int, 0, len(t.pids))
	for pid := range t.pids {
		pids = append(pids, pid)
	}
	slices.Sort(pids)
	return pids
}

// DumpFd records fd num of pid, as DumpFds does for each fd of pid, and
// returns its entry of the fd table.
func (t *Table) DumpFd(pid, num int) (*fdinfo.FdinfoEntry, error) {
	t.pids[pid] = true
	return t.dumpFd(pid, num)
}

func (t *Table) dumpFd(pid, num int) (*fdinfo.FdinfoEntry, error) {
	fd := &Fd{Pid: pid, Num: num}
	d, err := t.dumpFile(fd, nil)
	if err != nil {
		return nil, err
	}
	if err := t.dumpLocks(fd, d.id); err != nil {
		return nil, err
	}
	return fdEntry(num, d.id, fd.Info.Flags, d.typ), nil
}

// dumpFile classifies fd and records its open file description: the
// entry of the first fd seen on it, by the fd's kind, or the one already
// recorded. allow, if set, may refuse a kind (files in flight).
func (t *Table) dumpFile(fd *Fd, allow func(fd *Fd, kind string) error) (*desc, error) {
	var err error
	if fd.Target, err = os.Readlink(fd.Path()); err != nil {
		return nil, fmt.Errorf("%s: %w", fd, err)
	}
	if fd.Info, err = proc.ReadFdinfo(fd.Pid, fd.Num); err != nil {
		return nil, fmt.Errorf("%s: %w", fd, err)
	}
	if err := unix.Stat(fd.Path(), &fd.Stat); err != nil {
		return nil, fmt.Errorf("%s (%s): %w", fd, fd.Target, err)
	}
	name := kindOf(fd.Target, &fd.Stat)
	if name == "reg" && isMqueue(fd) {
		name = "mqueue"
	}
	k := kindsByName[name]
	if k == nil || k.Dump == nil {
		return nil, &UnsupportedError{Pid: fd.Pid, Fd: fd.Num, Kind: name, Target: fd.Target}
	}
	if allow != nil {
		if err := allow(fd, name); err != nil {
			return nil, err
		}
	}
	d, dup, record, err := t.shared(fd.Pid, fd.Num, &fd.Stat)
	if err != nil {
		return nil, err
	}
	if dup {
		return d, nil
	}
	// Reserved first: a kind may add entries of its own (a FIFO's path)
	// while it dumps this one. Recorded first: a socket may carry itself
	// in its queue (SCM_RIGHTS), and its dump finds it there.
	fd.ID = t.nextID
	t.nextID++
	d = &desc{id: fd.ID}
	record(d)
	fe, err := k.Dump(t, fd)
	if err != nil {
		var ue *UnsupportedError
		if errors.As(err, &ue) {
			return nil, err
		}
		return nil, fmt.Errorf("dump %s (%s): %w", fd, name, err)
	}
	if err := setFown(fe, fd); err != nil {
		return nil, fmt.Errorf("dump %s (%s): %w", fd, name, err)
	}
	t.put(fe, fd.ID)
	d.typ = fe.GetType()
	return d, nil
}

// DumpFile records the open file description of fd as DumpFds does for
// a task's fd, and returns its id: it is for a file no task holds, a
// file in flight in a unix socket's queue (fd.Via set), of which stasis
// dumps its own copy. allow, if set, may refuse its kind first.
func (t *Table) DumpFile(fd *Fd, allow func(fd *Fd, kind string) error) (uint32, error) {
	d, err := t.dumpFile(fd, allow)
	if err != nil {
		return 0, err
	}
	return d.id, nil
}

// CheckTree refuses what only the whole tree tells (a pipe or a peer
// outside it), once every fd is dumped and before WriteImages: each
// kind's check.
func (t *Table) CheckTree() error {
	for _, k := range kindOrder {
		if k.Check != nil {
			if err := k.Check(t); err != nil {
				return err
			}
		}
	}
	return nil
}

// WriteImages writes files.img and the images of every kind that has
// its own (pipe data, ghost files, ...), once every fd is dumped.
func (t *Table) WriteImages(dir *images.Dir) error {
	for _, k := range kindOrder {
		if k.Write != nil {
			if err := k.Write(t, dir); err != nil {
				return err
			}
		}
	}
	ms := make([]proto.Message, len(t.Files))
	for i, e := range t.Files {
		ms[i] = e
	}
	return dir.Write("files.img", ms...)
}

// BeforeKill makes the tree's files ready to die with it, just before the
// dump kills the tree: TCP connections go back into repair mode, so that
// they vanish without a FIN or a reset to the peer.
func (t *Table) BeforeKill() error {
	var errs []error
	for _, fn := range t.beforeKill {
		errs = append(errs, fn())
	}
	return errors.Join(errs...)
}

// AtBeforeKill registers fn to run in BeforeKill.
func (t *Table) AtBeforeKill(fn func() error) { t.beforeKill = append(t.beforeKill, fn) }

// AtFinish registers fn to run in Finish, whether the tree was killed or
// resumed: a kind lets go of what it holds in the tree (connections in
// repair mode, copies of files in flight).
func (t *Table) AtFinish(fn func(killed bool) error) { t.finish = append(t.finish, fn) }

// Finish lets go of what the dump holds in the tree's files once the
// tree is killed (killed) or resumed (-R, -s, a failed dump): TCP
// connections held in repair mode. The dump calls it on every path.
func (t *Table) Finish(killed bool) error {
	var errs []error
	for _, fn := range t.finish {
		errs = append(errs, fn(killed))
	}
	t.finish = nil
	return errors.Join(errs...)
}

func fdEntry(fd int, id, openFlags uint32, typ fdinfo.FdTypes) *fdinfo.FdinfoEntry {
	var fdFlags uint32
	if openFlags&unix.O_CLOEXEC != 0 {
		fdFlags = unix.FD_CLOEXEC
	}
	return &fdinfo.FdinfoEntry{
		Id:    proto.Uint32(id),
		Flags: proto.Uint32(fdFlags),
		Type:  typ.Enum(),
		Fd:    proto.Uint32(uint32(fd)),
	}
}
