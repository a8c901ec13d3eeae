package mem

import (
	"fmt"
	"log/slog"
	"os"
	"sort"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/progress"
	"github.com/stasis-cr/stasis/internal/remote"
)

// A task's address space as a whole: what the images say about it
// (Image, ReadImage), and the restore's memory step (RestoreMemory),
// which calls the steps of each sub-resource in order.

// stackGap keeps a range chosen by FreeRange clear of a growsdown
// stack's guard gap (stack_guard_gap is 256 pages).
const stackGap = 1 << 20

// Image is what the images say about one task's address space.
type Image struct {
	MM       *mm.MmEntry // VMAs, mm fields, AIO rings
	PagesID  uint32
	Pagemap  []*pagemap.PagemapEntry
	Paged    map[uint64]bool // VMA starts that receive pages
	PagesLen int64
	parents  *ParentPages    // where the pages of entries in parent are (parent.go); nil if none
	Guards   []*vma.VmaEntry // guard regions, taken out of MM.Vmas (guard.go)
}

// ReadImage reads mm-PID.img and pagemap-PID.img of pid and checks them
// against each other, against files.img (hasFile tells whether a file id
// is in it) and against the pages image, before anything is created.
// The shared anonymous memory objects the VMAs map are noted in shm.
func ReadImage(dir *images.Dir, pid uint32, hasFile func(id uint32) bool, shm *ShmemObjects) (*Image, error) {
	name := func(kind string) string { return fmt.Sprintf("%s-%d.img", kind, pid) }
	img := &Image{MM: &mm.MmEntry{}}
	if err := dir.ReadOne(name("mm"), img.MM); err != nil {
		return nil, err
	}
	img.MM.Vmas, img.Guards = splitGuards(img.MM.GetVmas())
	for i, g := range img.Guards {
		if g.GetStart() >= g.GetEnd() || g.GetStart()%PageSize != 0 || g.GetEnd()%PageSize != 0 {
			return nil, bad(name("mm"), "guard region %d: bad range %#x-%#x", i, g.GetStart(), g.GetEnd())
		}
	}
	if err := checkMM(name("mm"), img.MM, hasFile, shm); err != nil {
		return nil, err
	}
	if err := img.readPagemap(dir, name("pagemap")); err != nil {
		return nil, err
	}
	return img, nil
}

func bad(file string, format string, args ...any) error {
	return fmt.Errorf("image %s: %w: %s", file, images.ErrInconsistent, fmt.Sprintf(format, args...))
}

// FileSource opens, in stasis, the files of files.img that VMAs map (the
// restore's files.Restorer).
type FileSource interface {
	// Open returns the file of files.img entry id.
	Open(id uint32) (*os.File, error)
	// OpenMapping returns it opened with the flags fdflags a mapping of
	// it had (its VMA's fdflags).
	OpenMapping(id, fdflags uint32) (*os.File, error)
}

// Restorer restores the address spaces of one tree; one serves every
// task of it.
type Restorer struct {
	Dir      *images.Dir
	Files    FileSource
	FileName func(id uint32) string // path of files.img entry id
	SameFile func(a, b uint32) bool // whether two file ids name one file
	Shmem    *ShmemObjects          // the tree's shared anonymous memory
	Keep     [2]uint64              // the orchestrator's injection page: never unmapped
	Log      *slog.Logger
	Progress *progress.Meter // counts the pages filled (nil: not counted)
	Lazy     bool            // --lazy-pages: PE_LAZY pages are left missing (lazy.go)
}

// RestoreMemory gives the task t the address space of img. The root
// (parent nil) starts from an empty one. A child starts from a copy of
// its parent's (it was cloned from it): mappings that are the same in
// both images are kept, so that pages still shared copy-on-write stay
// shared, and only the child's pages that differ are written. stop is
// called before each chunk of the page fill.
func (r *Restorer) RestoreMemory(t remote.Task, img, parent *Image, stop func() error) (FillStats, error) {
	var st FillStats
	vmas := img.MM.GetVmas()
	var kept map[uint64]bool
	if parent == nil {
		if err := r.unmapAll(t); err != nil {
			return st, err
		}
	} else {
		var err error
		if kept, err = r.keepInherited(t, img, parent); err != nil {
			return st, err
		}
	}
	if err := MapAreas(t, vmas, img.Paged, kept, r.opener(t)); err != nil {
		return st, err
	}
	pages, err := r.Dir.OpenRaw(fmt.Sprintf("pages-%d.img", img.PagesID))
	if err != nil {
		return st, err
	}
	defer pages.Close()
	st, err = fillPages(t.HostPid(), img.Pagemap, pages, vmas, kept, stop, r.Progress, r.Lazy)
	if err != nil {
		return st, fmt.Errorf("%s: %w", pages.Name(), err)
	}
	if st, err = img.fillParents(t.HostPid(), st, vmas, kept, stop, r.Lazy && LazyParents(img.Pagemap, vmas)); err != nil {
		return st, err
	}
	if err := restoreAioRings(t, img.MM); err != nil {
		return st, err
	}
	if err := Protect(t, vmas, img.Pagemap, img.Paged, kept); err != nil {
		return st, err
	}
	if err := installGuards(t, img.Guards); err != nil {
		return st, err
	}
	return st, restoreVDSO(t, vmas, kept)
}

// opener returns the FileOpener of MapAreas for task t: files and shared
// memory objects are opened in stasis and passed into t.
func (r *Restorer) opener(t remote.Task) FileOpener {
	return func(e *vma.VmaEntry) (int, error) {
		if e.GetStatus()&AnonShared != 0 {
			f, err := r.Shmem.open(e.GetShmid())
			if err != nil {
				return 0, err
			}
			return t.PassFile(f)
		}
		if e.Fdflags == nil || e.GetStatus()&AreaSocket != 0 {
			fd, err := r.passFile(t, uint32(e.GetShmid()))
			return int(fd), err
		}
		f, err := r.Files.OpenMapping(uint32(e.GetShmid()), e.GetFdflags())
		if err != nil {
			return 0, err
		}
		return t.PassFile(f)
	}
}

// passFile puts the file of files.img entry id into t and returns its fd
// number there.
func (r *Restorer) passFile(t remote.Task, id uint32) (uint64, error) {
	f, err := r.Files.Open(id)
	if err != nil {
		return 0, err
	}
	fd, err := t.PassFile(f)
	return uint64(fd), err
}

// unmapAll unmaps everything the root task inherited from the puppet but
// the injection page ([vsyscall] cannot be unmapped and is the same in
// every process).
func (r *Restorer) unmapAll(t remote.Task) error {
	cur, err := proc.ReadMaps(t.HostPid())
	if err != nil {
		return err
	}
	for _, v := range cur {
		if v.Start == r.Keep[0] || v.Path == "[vsyscall]" {
			continue
		}
		if _, err := t.Call("munmap", unix.SYS_MUNMAP, v.Start, v.End-v.Start); err != nil {
			return fmt.Errorf("%#x-%#x (%s): %w", v.Start, v.End, v.Path, err)
		}
	}
	return nil
}

// keepInherited unmaps what the task inherited from its parent but does
// not have itself, and returns the start addresses of the VMAs it keeps:
// those with the same range and origin in both images. The kernel may have
// merged adjacent mappings in the restored parent, so what is unmapped is
// computed in address ranges, not in the parent's current VMAs.
func (r *Restorer) keepInherited(t remote.Task, img, parent *Image) (map[uint64]bool, error) {
	cur, err := proc.ReadMaps(t.HostPid())
	if err != nil {
		return nil, err
	}
	mapped := func(start, end uint64) bool {
		for _, c := range cur {
			if c.Start <= start && start < c.End {
				start = c.End
			}
			if start >= end {
				return true
			}
		}
		return start >= end
	}
	theirs := map[uint64]*vma.VmaEntry{}
	for _, v := range parent.MM.GetVmas() {
		theirs[v.GetStart()] = v
	}
	kept := map[uint64]bool{}
	var keep [][2]uint64
	for _, mine := range img.MM.GetVmas() {
		t := theirs[mine.GetStart()]
		if t != nil && t.GetEnd() == mine.GetEnd() && SameOrigin(mine, t, r.SameFile) && mapped(mine.GetStart(), mine.GetEnd()) {
			kept[mine.GetStart()] = true
			keep = append(keep, [2]uint64{mine.GetStart(), mine.GetEnd()})
		}
	}
	r.Log.Debug("inherited mappings kept", "pid", t.HostPid(), "kept", len(kept), "vmas", len(img.MM.GetVmas()))
	keep = append(keep, r.Keep)
	for _, c := range cur {
		if c.Path == "[vsyscall]" {
			continue
		}
		for _, g := range uncovered(c.Start, c.End, keep) {
			if _, err := t.Call("munmap", unix.SYS_MUNMAP, g[0], g[1]-g[0]); err != nil {
				return nil, fmt.Errorf("%#x-%#x (%s): %w", g[0], g[1], c.Path, err)
			}
		}
	}
	return kept, nil
}

// uncovered returns the parts of [start, end) outside every range of keep.
func uncovered(start, end uint64, keep [][2]uint64) [][2]uint64 {
	out := [][2]uint64{{start, end}}
	for _, k := range keep {
		var next [][2]uint64
		for _, r := range out {
			if k[1] <= r[0] || k[0] >= r[1] {
				next = append(next, r)
				continue
			}
			if r[0] < k[0] {
				next = append(next, [2]uint64{r[0], k[0]})
			}
			if k[1] < r[1] {
				next = append(next, [2]uint64{k[1], r[1]})
			}
		}
		out = next
	}
	return out
}

// FreeRange finds an address range of size bytes free in the task pid
// now and in every address space of spaces (nil ones are skipped), with a
// margin around it: the restore keeps its injection page there in every
// task until the end. ok is false if there is none.
func FreeRange(pid int, spaces []*Image, size uint64) (base uint64, ok bool, err error) {
	cur, err := proc.ReadMaps(pid)
	if err != nil {
		return 0, false, err
	}
	var busy [][2]uint64
	for _, v := range cur {
		busy = append(busy, [2]uint64{v.Start, v.End})
	}
	for _, sp := range spaces {
		if sp == nil {
			continue
		}
		for _, v := range sp.MM.GetVmas() {
			lo := v.GetStart()
			if v.GetFlags()&unix.MAP_GROWSDOWN != 0 && lo > stackGap {
				lo -= stackGap
			}
			busy = append(busy, [2]uint64{lo, v.GetEnd()})
		}
	}
	base, ok = findHole(busy, size)
	return base, ok, nil
}

// findHole returns the lowest address above 4 GiB (or failing that above
// 1 MiB) with size bytes free and a 1 MiB margin on both sides.
func findHole(busy [][2]uint64, size uint64) (uint64, bool) {
	sort.Slice(busy, func(i, j int) bool { return busy[i][0] < busy[j][0] })
	const margin = 1 << 20
	const top = 0x7ffffffff000
	for _, floor := range []uint64{1 << 32, 1 << 20} {
		cand := floor
		for _, b := range busy {
			if b[1]+margin <= cand {
				continue
			}
			if cand+size+margin <= b[0] {
				break
			}
			cand = (b[1] + margin + PageSize - 1) &^ (PageSize - 1)
		}
		if cand+size+margin <= top {
			return cand, true
		}
	}
	return 0, false
}
