package files

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/proc"
)

// ErrUnsupported is wrapped by errors about fds of a kind stasis cannot
// checkpoint yet.
var ErrUnsupported = errors.New("not supported")

// memMajor is the major number of /dev/null, /dev/zero, /dev/full,
// /dev/random and /dev/urandom; criu dumps these as regular files.
const memMajor = 1

// Table is the file table of a dump: every FileEntry with a unique id.
type Table struct {
	Files  []*fdinfo.FileEntry
	nextID uint32
	paths  map[string]uint32 // path-only entries (mappings), shared
	// open descriptions seen so far, by device and inode, to find fds
	// that share one (dup, fork): they must share it again after restore.
	descs map[[2]uint64][]desc
	// memfds seen mapped, by inode
	memfds map[uint64]*memfdFile
}

// desc is one fd already in the table.
type desc struct {
	pid, fd int
	id      uint32
}

// NewTable returns an empty table.
func NewTable() *Table {
	return &Table{nextID: 1, paths: map[string]uint32{}, descs: map[[2]uint64][]desc{}, memfds: map[uint64]*memfdFile{}}
}

// shared returns the id of an fd already recorded that refers to the same
// open file description as fd of pid, as kcmp(KCMP_FILE) tells.
func (t *Table) shared(pid, fd int, st *unix.Stat_t) (uint32, bool, error) {
	key := [2]uint64{st.Dev, st.Ino}
	for _, d := range t.descs[key] {
		same, err := linux.Kcmp(pid, d.pid, linux.KcmpFile, fd, d.fd)
		if err != nil {
			return 0, false, fmt.Errorf("compare fd %d of pid %d with fd %d of pid %d: %w", fd, pid, d.fd, d.pid, err)
		}
		if same {
			return d.id, true, nil
		}
	}
	return 0, false, nil
}

// add gives fe the next id. Kind dumpers that are told the id in advance
// (t.nextID) have already put it in their sub-message.
func (t *Table) add(fe *fdinfo.FileEntry) uint32 {
	id := t.nextID
	t.nextID++
	fe.Id = proto.Uint32(id)
	if fe.Reg != nil {
		fe.Reg.Id = proto.Uint32(id)
	}
	t.Files = append(t.Files, fe)
	return id
}

func regEntry(path string, flags uint32, pos uint64, st *unix.Stat_t) *fdinfo.FileEntry {
	return &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_REG.Enum(),
		Reg: &regfile.RegFileEntry{
			Flags: proto.Uint32(flags),
			Pos:   proto.Uint64(pos),
			Fown: &fown.FownEntry{
				Uid: proto.Uint32(0), Euid: proto.Uint32(0), Signum: proto.Uint32(0),
				PidType: proto.Uint32(0), Pid: proto.Uint32(0),
			},
			Name: proto.String(path),
			Size: proto.Uint64(uint64(st.Size)),
			Mode: proto.Uint32(st.Mode),
		},
	}
}

// AddPath records a file referenced by path only (a mapping, the exe
// link, cwd or root) and returns its id. The same path opened with the
// same flags gets one entry.
func (t *Table) AddPath(path string, flags uint32) (uint32, error) {
	key := strconv.FormatUint(uint64(flags), 8) + ":" + path
	if id, ok := t.paths[key]; ok {
		return id, nil
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	id := t.add(regEntry(path, flags, 0, &st))
	t.paths[key] = id
	return id, nil
}

// DumpFds records every fd of pid and returns its fd table.
func (t *Table) DumpFds(pid int) ([]*fdinfo.FdinfoEntry, error) {
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
	var out []*fdinfo.FdinfoEntry
	for _, fd := range sortedInts(fds) {
		e, err := t.dumpFd(pid, fd)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func (t *Table) dumpFd(pid, fd int) (*fdinfo.FdinfoEntry, error) {
	link := fmt.Sprintf("/proc/%d/fd/%d", pid, fd)
	target, err := os.Readlink(link)
	if err != nil {
		return nil, fmt.Errorf("fd %d of pid %d: %w", fd, pid, err)
	}
	fi, err := proc.ReadFdinfo(pid, fd)
	if err != nil {
		return nil, fmt.Errorf("fd %d of pid %d: %w", fd, pid, err)
	}
	var st unix.Stat_t
	if kind := Kind(target); kind != "" {
		dumper, typ := anonKinds[kind].dump, anonKinds[kind].typ
		if dumper == nil {
			return nil, fmt.Errorf("fd %d of pid %d is %s (%s): %w", fd, pid, kind, target, ErrUnsupported)
		}
		if err := unix.Stat(link, &st); err != nil {
			return nil, fmt.Errorf("fd %d of pid %d (%s): %w", fd, pid, target, err)
		}
		id, dup, err := t.shared(pid, fd, &st)
		if err != nil {
			return nil, err
		}
		if !dup {
			fe, err := dumper(pid, fd, t.nextID, fi)
			if err != nil {
				return nil, fmt.Errorf("fd %d of pid %d (%s): %w", fd, pid, kind, err)
			}
			id = t.add(fe)
			key := [2]uint64{st.Dev, st.Ino}
			t.descs[key] = append(t.descs[key], desc{pid: pid, fd: fd, id: id})
		}
		return fdEntry(fd, id, fi.Flags, typ), nil
	}
	if err := unix.Stat(link, &st); err != nil {
		return nil, fmt.Errorf("fd %d of pid %d (%s): %w", fd, pid, target, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFDIR:
	case unix.S_IFCHR:
		if unix.Major(st.Rdev) != memMajor {
			return nil, fmt.Errorf("fd %d of pid %d is a character device %d:%d (%s): %w",
				fd, pid, unix.Major(st.Rdev), unix.Minor(st.Rdev), target, ErrUnsupported)
		}
	default:
		return nil, fmt.Errorf("fd %d of pid %d is a file of mode %#o (%s): %w", fd, pid, st.Mode&unix.S_IFMT, target, ErrUnsupported)
	}
	if strings.HasSuffix(target, " (deleted)") {
		return nil, fmt.Errorf("fd %d of pid %d is an unlinked file (%s): %w", fd, pid, target, ErrUnsupported)
	}
	id, dup, err := t.shared(pid, fd, &st)
	if err != nil {
		return nil, err
	}
	if !dup {
		id = t.add(regEntry(target, fi.Flags&^unix.O_CLOEXEC, fi.Pos, &st))
		key := [2]uint64{st.Dev, st.Ino}
		t.descs[key] = append(t.descs[key], desc{pid: pid, fd: fd, id: id})
	}
	return fdEntry(fd, id, fi.Flags, fdinfo.FdTypes_REG), nil
}

// anonKinds are the anon-inode fd kinds stasis dumps, by Kind name.
var anonKinds = map[string]struct {
	dump func(pid, fd int, id uint32, fi *proc.Fdinfo) (*fdinfo.FileEntry, error)
	typ  fdinfo.FdTypes
}{
	"eventfd":   {DumpEventfd, fdinfo.FdTypes_EVENTFD},
	"eventpoll": {DumpEpoll, fdinfo.FdTypes_EVENTPOLL},
	"signalfd":  {DumpSignalfd, fdinfo.FdTypes_SIGNALFD},
	"timerfd":   {DumpTimerfd, fdinfo.FdTypes_TIMERFD},
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

// Kind names the kind of an fd whose /proc/PID/fd link is target when it
// is not a path on a filesystem, "" for paths.
func Kind(target string) string {
	switch {
	case strings.HasPrefix(target, "pipe:"):
		return "a pipe"
	case strings.HasPrefix(target, "socket:"):
		return "a socket"
	case strings.HasPrefix(target, "anon_inode:"):
		k := strings.Trim(strings.TrimPrefix(target, "anon_inode:"), "[]")
		return k
	case strings.HasPrefix(target, "/memfd:"):
		return "a memfd"
	case strings.HasPrefix(target, "/"):
		return ""
	}
	return "an unknown object"
}

func sortedInts(v []int) []int {
	for i := 1; i < len(v); i++ {
		for j := i; j > 0 && v[j] < v[j-1]; j-- {
			v[j], v[j-1] = v[j-1], v[j]
		}
	}
	return v
}
