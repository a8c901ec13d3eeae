package files

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/memfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
)

func init() {
	register(&kind{name: "memfd", typ: fdinfo.FdTypes_MEMFD, write: writeMemfds, open: openMemfdFile})
}

// openMemfdFile opens the memfd of a MEMFD entry.
func openMemfdFile(r *Restorer, fe *fdinfo.FileEntry) (*os.File, error) {
	inode := r.Memfds[fe.GetMemfd().GetInodeId()]
	if inode == nil {
		return nil, fmt.Errorf("memfd file id %d: inode %d is not in memfd.img: %w", fe.GetId(), fe.GetMemfd().GetInodeId(), images.ErrCorrupt)
	}
	return OpenMemfd(inode, r.Dir)
}

// memfdFile is a memfd the dump saw mapped, by inode.
type memfdFile struct {
	entry  *memfd.MemfdInodeEntry
	fileID uint32
	src    string // /proc/PID/map_files/... of one mapping, to read it
}

const pageSize = 4096

// AddMemfdMapping records the memfd mapped at [start, end) of pid and
// returns the id of its file entry (type MEMFD): criu's representation, a
// memfd_file_entry pointing at a memfd_inode_entry in memfd.img whose
// content is stored as shmem pages (pagemap-shmem-SHMID.img). All
// mappings of one memfd share one entry and so, after restore, one memfd.
func (t *Table) AddMemfdMapping(pid int, start, end uint64, path string) (uint32, error) {
	src := fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, start, end)
	var st unix.Stat_t
	if err := unix.Stat(src, &st); err != nil {
		return 0, fmt.Errorf("memfd mapping %#x-%#x of pid %d: %w", start, end, pid, err)
	}
	if m := t.memfds[st.Ino]; m != nil {
		return m.fileID, nil
	}
	f, err := os.Open(src)
	if err != nil {
		return 0, fmt.Errorf("memfd mapping %#x-%#x of pid %d: %w", start, end, pid, err)
	}
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	f.Close()
	if err != nil {
		seals = 0 // created without MFD_ALLOW_SEALING: F_SEAL_SEAL only
	}
	inodeID := uint32(len(t.memfds) + 1)
	m := &memfdFile{src: src, entry: &memfd.MemfdInodeEntry{
		Name:    proto.String(strings.TrimPrefix(path, "/memfd:")),
		Uid:     proto.Uint32(st.Uid),
		Gid:     proto.Uint32(st.Gid),
		Size:    proto.Uint64(uint64(st.Size)),
		Shmid:   proto.Uint32(uint32(st.Ino)),
		Seals:   proto.Uint32(uint32(seals)),
		InodeId: proto.Uint64(uint64(inodeID)),
		Mode:    proto.Uint32(st.Mode),
	}}
	m.fileID = t.add(&fdinfo.FileEntry{
		Type: fdinfo.FdTypes_MEMFD.Enum(),
		Memfd: &memfd.MemfdFileEntry{
			Flags: proto.Uint32(unix.O_RDWR), Pos: proto.Uint64(0), InodeId: proto.Uint32(inodeID),
			Fown: &fown.FownEntry{Uid: proto.Uint32(0), Euid: proto.Uint32(0), Signum: proto.Uint32(0), PidType: proto.Uint32(0), Pid: proto.Uint32(0)},
		},
	})
	t.Files[len(t.Files)-1].Memfd.Id = proto.Uint32(m.fileID)
	t.memfds[st.Ino] = m
	return m.fileID, nil
}

// writeMemfds writes memfd.img and the content of every memfd: the data
// parts of the file (holes stay holes) as pagemap-shmem-SHMID.img entries
// with their pages in pages-N.img, N from t.PagesID.
func writeMemfds(t *Table, dir *images.Dir) error {
	if len(t.memfds) == 0 {
		return nil
	}
	var inodes []proto.Message
	for _, m := range t.memfds {
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
	out, err := dir.CreateRaw(fmt.Sprintf("pages-%d.img", pagesID))
	if err != nil {
		return err
	}
	defer out.Close()
	ents := []proto.Message{&pagemap.PagemapHead{PagesId: proto.Uint32(uint32(pagesID))}}
	size := int64(m.entry.GetSize())
	for off := int64(0); off < size; {
		data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if err != nil {
			break // ENXIO: no data after off
		}
		hole, err := unix.Seek(int(f.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		lo := data &^ (pageSize - 1)
		hi := min((hole+pageSize-1)&^(pageSize-1), (size+pageSize-1)&^(pageSize-1))
		buf := make([]byte, hi-lo)
		if _, err := f.ReadAt(buf, lo); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if _, err := out.Write(buf); err != nil {
			return err
		}
		ents = append(ents, &pagemap.PagemapEntry{
			Vaddr: proto.Uint64(uint64(lo)), CompatNrPages: proto.Uint32(0),
			NrPages: proto.Uint64(uint64(hi-lo) / pageSize), Flags: proto.Uint32(4),
		})
		off = hi
	}
	return dir.Write(fmt.Sprintf("pagemap-shmem-%d.img", m.entry.GetShmid()), ents...)
}

// OpenMemfd creates the memfd of inode in stasis with its name, size,
// content (from pagemap-shmem-SHMID.img) and seals.
func OpenMemfd(inode *memfd.MemfdInodeEntry, dir *images.Dir) (*os.File, error) {
	fd, err := unix.MemfdCreate(inode.GetName(), unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd_create %q: %w", inode.GetName(), err)
	}
	f := os.NewFile(uintptr(fd), "memfd:"+inode.GetName())
	if err := f.Truncate(int64(inode.GetSize())); err != nil {
		f.Close()
		return nil, err
	}
	if err := fillMemfd(f, inode, dir); err != nil {
		f.Close()
		return nil, fmt.Errorf("memfd %q: %w", inode.GetName(), err)
	}
	// Write seals would forbid the writable shared mappings the tasks
	// still have to create: only the others are restored.
	if s := int(inode.GetSeals()) &^ (unix.F_SEAL_WRITE | unix.F_SEAL_FUTURE_WRITE); s != 0 {
		if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, s); err != nil {
			f.Close()
			return nil, fmt.Errorf("memfd %q seals %#x: %w", inode.GetName(), s, err)
		}
	}
	return f, nil
}

func fillMemfd(f *os.File, inode *memfd.MemfdInodeEntry, dir *images.Dir) error {
	name := fmt.Sprintf("pagemap-shmem-%d.img", inode.GetShmid())
	if !dir.Has(name) {
		return nil
	}
	r, err := dir.NewReader(name)
	if err != nil {
		return err
	}
	defer r.Close()
	head := &pagemap.PagemapHead{}
	if err := r.Next(head); err != nil {
		return err
	}
	pages, err := dir.OpenRaw(fmt.Sprintf("pages-%d.img", head.GetPagesId()))
	if err != nil {
		return err
	}
	defer pages.Close()
	var off int64
	for {
		pe := &pagemap.PagemapEntry{}
		if err := r.Next(pe); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		n := int64(pe.GetNrPages()) * pageSize
		if pe.GetVaddr()+uint64(n) > inode.GetSize()+pageSize {
			return fmt.Errorf("%s: pages at %#x beyond the memfd's %d bytes: %w", name, pe.GetVaddr(), inode.GetSize(), images.ErrCorrupt)
		}
		buf := make([]byte, n)
		if _, err := pages.ReadAt(buf, off); err != nil {
			return fmt.Errorf("pages-%d.img at offset %d: %w", head.GetPagesId(), off, err)
		}
		if _, err := f.WriteAt(buf[:min(n, int64(inode.GetSize())-int64(pe.GetVaddr()))], int64(pe.GetVaddr())); err != nil {
			return err
		}
		off += n
	}
}
