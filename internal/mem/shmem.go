package mem

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
)

// Shared memory objects - the shmem file behind a MAP_SHARED|MAP_ANONYMOUS
// mapping, a memfd - own their pages: a page written through a mapping
// that has since gone (a child that exited, a region unmapped) is in no
// process's pagemap, yet it is still there for every other mapping. So,
// as criu does, the content of each object is dumped once, from the object
// itself: its data ranges (SEEK_DATA/SEEK_HOLE; holes stay holes) go to
// pages-N.img, described by pagemap-shmem-SHMID.img whose entries' vaddr
// is the offset in the object.

// ShmemPagemap is the name of the pagemap image of shared memory object
// shmid.
func ShmemPagemap(shmid uint64) string { return fmt.Sprintf("pagemap-shmem-%d.img", shmid) }

// DumpShmem writes the data of the first size bytes of the shmem file f
// into pages-PAGESID.img and pagemap-shmem-SHMID.img.
func DumpShmem(dir *images.Dir, f *os.File, size int64, shmid uint64, pagesID int) error {
	out, err := dir.CreateRaw(fmt.Sprintf("pages-%d.img", pagesID))
	if err != nil {
		return err
	}
	defer out.Close()
	ents := []proto.Message{&pagemap.PagemapHead{PagesId: proto.Uint32(uint32(pagesID))}}
	end := (size + PageSize - 1) &^ (PageSize - 1)
	var buf []byte
	for off := int64(0); off < end; {
		data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data after off
		}
		if err != nil {
			return os.NewSyscallError("lseek(SEEK_DATA)", err)
		}
		hole, err := unix.Seek(int(f.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return os.NewSyscallError("lseek(SEEK_HOLE)", err)
		}
		lo := data &^ (PageSize - 1)
		hi := min((hole+PageSize-1)&^(PageSize-1), end)
		if lo >= hi {
			break
		}
		// In chunks: a data range may be the whole of a big object.
		for at := lo; at < hi; {
			n := min(hi-at, copyChunk)
			if int64(len(buf)) < n {
				buf = make([]byte, n)
			}
			if _, err := f.ReadAt(buf[:n], at); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			if _, err := out.Write(buf[:n]); err != nil {
				return err
			}
			at += n
		}
		ents = append(ents, &pagemap.PagemapEntry{
			Vaddr: proto.Uint64(uint64(lo)), CompatNrPages: proto.Uint32(0),
			NrPages: proto.Uint64(uint64(hi-lo) / PageSize), Flags: proto.Uint32(PEPresent),
		})
		off = hi
	}
	if err := out.Close(); err != nil {
		return err
	}
	return dir.Write(ShmemPagemap(shmid), ents...)
}

// FillShmem writes the content of shared memory object shmid, of size
// bytes, from the images into w (the restored object's file). An object
// without a pagemap image had no data.
func FillShmem(dir *images.Dir, shmid uint64, size int64, w io.WriterAt) error {
	name := ShmemPagemap(shmid)
	if !dir.Has(name) {
		return nil
	}
	r, err := dir.NewReader(name)
	if err != nil {
		return err
	}
	defer r.Close()
	head := &pagemap.PagemapHead{}
	if err := r.Must(head); err != nil {
		return err
	}
	pagesName := fmt.Sprintf("pages-%d.img", head.GetPagesId())
	pages, err := dir.OpenRaw(pagesName)
	if err != nil {
		// Say which image sent us there: its pages id may be the damage.
		return fmt.Errorf("%s: pages of pages id %d: %w", name, head.GetPagesId(), err)
	}
	defer pages.Close()
	var off int64
	var buf []byte
	var chain *parentChain // for entries in parent (parent.go)
	for {
		at := r.Offset()
		pe := &pagemap.PagemapEntry{}
		if err := r.Next(pe); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		n := int64(NrPages(pe)) * PageSize
		if pe.GetVaddr()%PageSize != 0 || n <= 0 || int64(pe.GetVaddr()) < 0 || int64(pe.GetVaddr())+n > size+PageSize-1 {
			return fmt.Errorf("%s at offset %d: pages at %#x + %d bytes do not fit the object's %d bytes: %w",
				name, at, pe.GetVaddr(), n, size, images.ErrCorrupt)
		}
		if !HasData(pe) {
			if chain == nil {
				chain = &parentChain{dir: dir, name: name}
				buf = make([]byte, copyChunk)
			}
			if !InParent(pe) {
				return fmt.Errorf("%s at offset %d: pages %#x-%#x (flags %#x): %w", name, at, pe.GetVaddr(), int64(pe.GetVaddr())+n, pe.GetFlags(), ErrLazyPages)
			}
			if err := fillFromParents(chain, pe.GetVaddr(), uint64(n), w, size, buf); err != nil {
				return fmt.Errorf("%s at offset %d: %w", name, at, err)
			}
			continue
		}
		// The last page may reach past the object's size, which the
		// object must keep.
		keep := min(n, size-int64(pe.GetVaddr()))
		for done := int64(0); done < n; {
			c := min(n-done, copyChunk)
			if int64(len(buf)) < c {
				buf = make([]byte, c)
			}
			if _, err := pages.ReadAt(buf[:c], off+done); err != nil {
				return fmt.Errorf("%s at offset %d: %w", pagesName, off+done, err)
			}
			if k := min(c, keep-done); k > 0 {
				if _, err := w.WriteAt(buf[:k], int64(pe.GetVaddr())+done); err != nil {
					return err
				}
			}
			done += c
		}
		off += n
	}
}

// NewShmem creates a shared anonymous memory object of size bytes and
// returns its file, as a MAP_SHARED|MAP_ANONYMOUS mmap makes it: mappings
// of the file are what the kernel shows as "/dev/zero (deleted)", the same
// as the dumped ones, and they share the object.
func NewShmem(size int64) (*os.File, error) {
	if size <= 0 || size%PageSize != 0 {
		return nil, fmt.Errorf("shared memory object of %d bytes", size)
	}
	b, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("create shared memory of %d bytes: %w", size, os.NewSyscallError("mmap", err))
	}
	defer unix.Munmap(b)
	addr := sliceAddr(b)
	// The mapping's file, opened through its map_files link, keeps the
	// object once the mapping is gone.
	return os.OpenFile(fmt.Sprintf("/proc/self/map_files/%x-%x", addr, addr+uintptr(size)), os.O_RDWR, 0)
}

// TaskAreas is a dumped process's address space as the dump of shared memory
// needs it: its pid and its classified VMAs.
type TaskAreas struct {
	Pid   int
	Areas []*Area
}

// DumpSharedAnon dumps the content of every shared anonymous memory
// object of the tree (tasks, parents first) once, from the object itself
// (DumpShmem): the pagemaps of the processes miss the pages that only a
// process gone since (a worker that exited) or a mapping unmapped since
// had touched. Its size is the furthest any of its mappings reaches into
// it, as criu counts it. nextPagesID numbers the pages images.
func DumpSharedAnon(dir *images.Dir, tasks []TaskAreas, nextPagesID func() int) error {
	type object struct {
		pid        int
		start, end uint64
		size       int64
	}
	objs := map[uint64]*object{}
	var order []uint64
	for _, p := range tasks {
		for _, a := range p.Areas {
			if !a.Has(AnonShared) || a.Has(AreaSysVIPC) { // a System V segment is its ipc namespace's
				continue
			}
			id, size := a.E.GetShmid(), int64(a.E.GetPgoff()+a.End()-a.Start())
			if o := objs[id]; o != nil {
				o.size = max(o.size, size)
				continue
			}
			objs[id] = &object{pid: p.Pid, start: a.Start(), end: a.End(), size: size}
			order = append(order, id)
		}
	}
	for _, id := range order {
		o := objs[id]
		f, err := os.Open(fmt.Sprintf("/proc/%d/map_files/%x-%x", o.pid, o.start, o.end))
		if err != nil {
			return fmt.Errorf("shared memory %d (vma %#x-%#x of pid %d): %w", id, o.start, o.end, o.pid, err)
		}
		err = DumpShmem(dir, f, o.size, id, nextPagesID())
		f.Close()
		if err != nil {
			return fmt.Errorf("shared memory %d (vma %#x-%#x of pid %d): %w", id, o.start, o.end, o.pid, err)
		}
	}
	return nil
}

// ShmemObjects are the shared anonymous memory objects of a restore.
// Each is created once, in stasis, and filled from its pagemap-shmem
// image; every VMA of it, in every task, maps that object's file - not a
// fresh MAP_ANONYMOUS region - so that processes which shared it share it
// again whatever the way they came to (fork, then the parent unmapped it;
// mremap; a sibling's copy), and pages written by processes gone before
// the dump are there (criu's restore_shmem).
type ShmemObjects struct {
	dir *images.Dir
	mu  sync.Mutex
	// size is the size of each object, by shmid: the furthest any of its
	// mappings reaches into it (ReadImage notes them).
	size  map[uint64]int64
	files map[uint64]*os.File
}

// NewShmemObjects returns the (still empty) objects of the dump in dir.
func NewShmemObjects(dir *images.Dir) *ShmemObjects {
	return &ShmemObjects{dir: dir, size: map[uint64]int64{}}
}

// note records that a mapping reaches size bytes into object shmid.
func (s *ShmemObjects) note(shmid uint64, size int64) {
	s.size[shmid] = max(s.size[shmid], size)
}

// open returns the object shmid, creating it the first time.
func (s *ShmemObjects) open(shmid uint64) (*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.files[shmid]; f != nil {
		return f, nil
	}
	size := s.size[shmid]
	f, err := NewShmem(size)
	if err != nil {
		return nil, fmt.Errorf("shared memory %d: %w", shmid, err)
	}
	if err := FillShmem(s.dir, shmid, size, f); err != nil {
		f.Close()
		return nil, fmt.Errorf("shared memory %d: %w", shmid, err)
	}
	if s.files == nil {
		s.files = map[uint64]*os.File{}
	}
	s.files[shmid] = f
	return f, nil
}

// Close drops stasis' references: the objects live on in the tasks'
// mappings.
func (s *ShmemObjects) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, f := range s.files {
		errs = append(errs, f.Close())
	}
	s.files = nil
	return errors.Join(errs...)
}
