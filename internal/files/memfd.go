package files

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/memfd"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/mem"
)

func init() {
	Register(&Kind{Name: "memfd", Type: fdinfo.FdTypes_MEMFD, Dump: dumpMemfd, Write: writeMemfds, Open: openMemfdFile})
}

// A memfd is dumped as criu does: one MemfdInodeEntry in memfd.img per
// memfd (name, size, mode, owner, seals; its content in
// pagemap-shmem-SHMID.img), and one MEMFD FileEntry per open file
// description (flags, offset), for an fd as for the mappings. Its fds and
// its mappings share the inode entry and so, after restore, one memfd.

// memfdFile is a memfd seen by the dump, by inode.
type memfdFile struct {
	entry *memfd.MemfdInodeEntry
	src   string // a /proc path that opens it, to read its content
	// mapIDs are the file entries of its mappings, by open flags.
	mapIDs map[uint32]uint32
}

// memfdInode returns the memfd whose stat is st, recorded the first time
// it is seen (through src, an fd or map_files link of a frozen task).
func (t *Table) memfdInode(src, name string, st *unix.Stat_t) (*memfdFile, error) {
	if m := t.memfds[st.Ino]; m != nil {
		return m, nil
	}
	f, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("memfd %q: %w", name, os.NewSyscallError("fcntl F_GET_SEALS", err))
	}
	inodeID := uint32(len(t.memfds) + 1)
	m := &memfdFile{src: src, mapIDs: map[uint32]uint32{}, entry: &memfd.MemfdInodeEntry{
		Name:    proto.String(name),
		Uid:     proto.Uint32(st.Uid),
		Gid:     proto.Uint32(st.Gid),
		Size:    proto.Uint64(uint64(st.Size)),
		Shmid:   proto.Uint32(uint32(st.Ino)),
		Seals:   proto.Uint32(uint32(seals)),
		InodeId: proto.Uint64(uint64(inodeID)),
		Mode:    proto.Uint32(st.Mode),
	}}
	t.memfds[st.Ino] = m
	return m, nil
}

func memfdEntry(id, inodeID, flags uint32, pos uint64) *fdinfo.FileEntry {
	return &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_MEMFD.Enum(),
		Id:   proto.Uint32(id),
		Memfd: &memfd.MemfdFileEntry{
			Id: proto.Uint32(id), Flags: proto.Uint32(flags), Pos: proto.Uint64(pos),
			InodeId: proto.Uint32(inodeID), Fown: AnonFown(),
		},
	}
}

// dumpMemfd returns the entry of an fd on a memfd: its own flags and
// offset, pointing at the memfd's inode entry.
func dumpMemfd(t *Table, fd *Fd) (*fdinfo.FileEntry, error) {
	name := strings.TrimSuffix(strings.TrimPrefix(fd.Target, "/memfd:"), " (deleted)")
	m, err := t.memfdInode(fd.Path(), name, &fd.Stat)
	if err != nil {
		return nil, err
	}
	return memfdEntry(fd.ID, uint32(m.entry.GetInodeId()), fd.Flags(), fd.Info.Pos), nil
}

// AddMemfdMapping records the memfd mapped at [start, end) of pid and
// returns the id of the file entry the VMA maps. All mappings of one memfd
// share one entry. It is opened read-only when the memfd is write-sealed:
// the task's shared mappings then cannot be writable, and the restored
// ones must not be either (a mapping of a writable file counts as
// writable, and F_SEAL_WRITE cannot be added while one exists); a private
// mapping may still be written, as it may from a read-only file.
func (t *Table) AddMemfdMapping(pid int, start, end uint64, path string) (id, flags uint32, err error) {
	src := fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, start, end)
	var st unix.Stat_t
	if err := unix.Stat(src, &st); err != nil {
		return 0, 0, fmt.Errorf("memfd mapping %#x-%#x of pid %d: %w", start, end, pid, err)
	}
	m, err := t.memfdInode(src, strings.TrimPrefix(path, "/memfd:"), &st)
	if err != nil {
		return 0, 0, fmt.Errorf("memfd mapping %#x-%#x of pid %d: %w", start, end, pid, err)
	}
	flags = uint32(unix.O_RDWR)
	if m.entry.GetSeals()&unix.F_SEAL_WRITE != 0 {
		flags = unix.O_RDONLY
	}
	if id, ok := m.mapIDs[flags]; ok {
		return id, flags, nil
	}
	id = t.nextID
	t.Add(memfdEntry(id, uint32(m.entry.GetInodeId()), flags, 0))
	m.mapIDs[flags] = id
	return id, flags, nil
}

// writeMemfds writes memfd.img and the content of every memfd: the data
// parts of the file (holes stay holes) as pagemap-shmem-SHMID.img entries
// with their pages in pages-N.img, N from t.PagesID.
func writeMemfds(t *Table, dir *images.Dir) error {
	if len(t.memfds) == 0 {
		return nil
	}
	byID := make([]*memfdFile, 0, len(t.memfds))
	for _, m := range t.memfds {
		byID = append(byID, m)
	}
	slices.SortFunc(byID, func(a, b *memfdFile) int { return cmp.Compare(a.entry.GetInodeId(), b.entry.GetInodeId()) })
	var inodes []proto.Message
	for _, m := range byID {
		inodes = append(inodes, m.entry)
		if err := writeMemfdPages(dir, m, t.PagesID()); err != nil {
			return fmt.Errorf("memfd %q: %w", m.entry.GetName(), err)
		}
	}
	return dir.Write("memfd.img", inodes...)
}

func writeMemfdPages(dir *images.Dir, m *memfdFile, pagesID int) error {
	f, err := os.Open(m.src)
	if err != nil {
		return err
	}
	defer f.Close()
	return mem.DumpShmem(dir, f, int64(m.entry.GetSize()), uint64(m.entry.GetShmid()), pagesID)
}

// memfdRestore is the restore's state of memfds: each inode's memfd,
// created once in stasis; every file entry on it is a reopen of it.
type memfdRestore struct {
	inodes map[uint32]*os.File
	given  map[uint32]bool // memfdOwnFile handed the memfd_create description out
}

// openMemfdFile opens a MEMFD entry: a new open file description of its
// memfd (reopened through /proc/self/fd, as criu does) with the entry's
// flags and offset.
func openMemfdFile(r *Restorer, fe *fdinfo.FileEntry) (*os.File, error) {
	e := fe.GetMemfd()
	if fe.GetType() != fdinfo.FdTypes_MEMFD || e == nil {
		return nil, NotKind(fe, "a memfd")
	}
	inode := r.Memfds[e.GetInodeId()]
	if inode == nil {
		return nil, fmt.Errorf("memfd file id %d: inode %d is not in memfd.img: %w", fe.GetId(), e.GetInodeId(), images.ErrCorrupt)
	}
	m, err := r.memfdInode(inode)
	if err != nil {
		return nil, fmt.Errorf("memfd file id %d: %w", fe.GetId(), err)
	}
	// As for regular files: a damaged image must not truncate.
	flags := int(e.GetFlags()) &^ (unix.O_CLOEXEC | unix.O_CREAT | unix.O_TRUNC | unix.O_EXCL | unix.O_NOCTTY)
	f, err := r.memfdOwnFile(inode, m, flags)
	if err != nil {
		return nil, fmt.Errorf("memfd file id %d: %w", fe.GetId(), err)
	}
	if f == nil {
		f, err = os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", m.Fd()), flags|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("memfd file id %d: reopen memfd %q with flags %#o: %w", fe.GetId(), inode.GetName(), flags, err)
	}
	if pos := e.GetPos(); pos != 0 {
		if pos > math.MaxInt64 {
			f.Close()
			return nil, fmt.Errorf("memfd file id %d: offset %d: %w", fe.GetId(), pos, images.ErrCorrupt)
		}
		if _, err := unix.Seek(int(f.Fd()), int64(pos), io.SeekStart); err != nil {
			f.Close()
			return nil, fmt.Errorf("memfd file id %d: seek memfd %q to %d: %w", fe.GetId(), inode.GetName(), pos, err)
		}
	}
	return f, nil
}

// oLargefile is the kernel's O_LARGEFILE, which fdinfo shows (x/sys has
// 0 on amd64, where the kernel implies it).
const oLargefile = 0o100000

// memfdOwnFile returns, for the first read-write entry of a memfd, a dup
// of the description memfd_create made, nil for the others. That
// description, unlike a read-write reopen, does not count as a writer of
// the inode, so a program can still execveat() its memfd through it (a
// reopen makes that ETXTBSY); a program's memfd fd usually is that
// description.
func (r *Restorer) memfdOwnFile(inode *memfd.MemfdInodeEntry, m *os.File, flags int) (*os.File, error) {
	st, _ := r.state["memfd"].(*memfdRestore) // made by memfdInode
	id := uint32(inode.GetInodeId())
	if st == nil || flags&^oLargefile != unix.O_RDWR || st.given[id] {
		return nil, nil
	}
	fd, err := unix.FcntlInt(m.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup memfd %q: %w", inode.GetName(), os.NewSyscallError("fcntl", err))
	}
	st.given[id] = true
	return os.NewFile(uintptr(fd), "memfd:"+inode.GetName()), nil
}

// memfdInode returns the memfd of inode, created the first time.
func (r *Restorer) memfdInode(inode *memfd.MemfdInodeEntry) (*os.File, error) {
	st := stateOf(r.state, "memfd", func() *memfdRestore {
		s := &memfdRestore{inodes: map[uint32]*os.File{}, given: map[uint32]bool{}}
		r.OnDone(func() error {
			for _, f := range s.inodes {
				f.Close()
			}
			return nil
		})
		r.BeforeRun(func() error { return s.seal(r.Memfds) })
		return s
	})
	id := uint32(inode.GetInodeId())
	if f := st.inodes[id]; f != nil {
		return f, nil
	}
	f, err := createMemfd(inode, r.Dir)
	if err != nil {
		return nil, err
	}
	st.inodes[id] = f
	return f, nil
}

// createMemfd creates the memfd of inode in stasis with its name, size,
// content (from pagemap-shmem-SHMID.img), owner and mode; its seals come
// later (seal).
func createMemfd(inode *memfd.MemfdInodeEntry, dir *images.Dir) (*os.File, error) {
	flags := unix.MFD_CLOEXEC
	// A memfd made without MFD_ALLOW_SEALING shows F_SEAL_SEAL alone; one
	// made with it can be given its seals.
	if inode.GetSeals() != unix.F_SEAL_SEAL {
		flags |= unix.MFD_ALLOW_SEALING
	}
	fd, err := unix.MemfdCreate(inode.GetName(), flags)
	if err != nil {
		return nil, fmt.Errorf("memfd_create %q: %w", inode.GetName(), err)
	}
	f := os.NewFile(uintptr(fd), "memfd:"+inode.GetName())
	fail := func(err error) (*os.File, error) {
		f.Close()
		return nil, fmt.Errorf("memfd %q: %w", inode.GetName(), err)
	}
	if inode.GetSize() > math.MaxInt64 {
		return fail(fmt.Errorf("size %d: %w", inode.GetSize(), images.ErrCorrupt))
	}
	if err := f.Truncate(int64(inode.GetSize())); err != nil {
		return fail(err)
	}
	if err := fillMemfd(f, inode, dir); err != nil {
		return fail(err)
	}
	if err := f.Chown(int(inode.GetUid()), int(inode.GetGid())); err != nil {
		return fail(err)
	}
	// Images of criu before the mode field have none: keep memfd_create's.
	if inode.Mode != nil {
		if err := unix.Fchmod(fd, inode.GetMode()&07777); err != nil {
			return fail(os.NewSyscallError("fchmod", err))
		}
	}
	return f, nil
}

// seal gives every memfd its seals, once every task has its mappings and
// fds and before any of them runs. Not earlier: F_SEAL_WRITE forbids the
// writable shared mappings a F_SEAL_FUTURE_WRITE memfd may have, and
// F_SEAL_FUTURE_WRITE forbids making them; the tasks map memfds in the
// memory phase, before the files phase. Not later: a task must never see
// its memfd unsealed.
func (s *memfdRestore) seal(inodes map[uint32]*memfd.MemfdInodeEntry) error {
	for id, f := range s.inodes {
		inode := inodes[id]
		seals := int(inode.GetSeals())
		if seals == 0 || seals == unix.F_SEAL_SEAL {
			continue // none, or F_SEAL_SEAL alone: created without sealing
		}
		if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
			hint := ""
			if errors.Is(err, unix.EBUSY) {
				hint = " (a writable shared mapping of it exists)"
			}
			return fmt.Errorf("memfd %q: add seals %#x%s: %w", inode.GetName(), seals, hint, os.NewSyscallError("fcntl F_ADD_SEALS", err))
		}
	}
	return nil
}

func fillMemfd(f *os.File, inode *memfd.MemfdInodeEntry, dir *images.Dir) error {
	return mem.FillShmem(dir, uint64(inode.GetShmid()), int64(inode.GetSize()), f)
}
