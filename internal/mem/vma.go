package mem

import (
	"fmt"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/remote"
)

// VMAs (vma_entry of mm-PID.img). The dump classifies each VMA of
// /proc/PID/smaps by what backs it (Classify); the restore maps each at
// its address again (MapAreas) and gives it its protection and advice
// once its pages are in (Protect).

// VMA status bits of vma_entry.status (criu/include/image.h).
const (
	AreaRegular  = 1 << 0
	AreaStack    = 1 << 1
	AreaVsyscall = 1 << 2
	AreaVDSO     = 1 << 3
	AreaHeap     = 1 << 5
	FilePrivate  = 1 << 6
	FileShared   = 1 << 7
	AnonShared   = 1 << 8
	AnonPrivate  = 1 << 9
	AreaSysVIPC  = 1 << 10
	AreaSocket   = 1 << 11
	AreaVVAR     = 1 << 12
	AreaAIORing  = 1 << 13
	AreaMemfd    = 1 << 14
	AreaUprobes  = 1 << 17
)

// madvise advice recorded in vma_entry.madv as 1<<MADV_*, keyed by the
// smaps VmFlags mnemonic that shows it (fs/proc/task_mmu.c).
var madvByVmFlag = map[string]int{
	"rr": unix.MADV_RANDOM,
	"sr": unix.MADV_SEQUENTIAL,
	"dc": unix.MADV_DONTFORK,
	"dd": unix.MADV_DONTDUMP,
	"mg": unix.MADV_MERGEABLE,
	"hg": unix.MADV_HUGEPAGE,
	"nh": unix.MADV_NOHUGEPAGE,
	"wf": unix.MADV_WIPEONFORK,
}

// Area is one VMA of a dumped task with what the dump needs beside the
// image entry: the path of a file mapping.
type Area struct {
	E     *vma.VmaEntry
	Path  string // file mappings only
	Memfd bool   // Path is a memfd ("/memfd:NAME")
	Dev   uint64 // device and inode of the mapped file, from /proc/PID/map_files
	Ino   uint64
	// MayWrite: the mapping may be made writable (smaps "mw"): a shared
	// one maps a file opened for writing, whatever its protection now.
	MayWrite bool
}

func (a *Area) Has(status uint32) bool { return a.E.GetStatus()&status != 0 }
func (a *Area) Start() uint64          { return a.E.GetStart() }
func (a *Area) End() uint64            { return a.E.GetEnd() }

// Classify turns the smaps of pid into areas. File mappings are checked
// against /proc/PID/map_files so that the path in the image is the file
// that is really mapped. A mapping that cannot be dumped is handed to
// refuse, which ends the classification with its error or returns nil to
// go on without that area (a preflight lists them all).
func Classify(pid int, vmas []proc.VMA, refuse func(error) error) ([]*Area, error) {
	areas := make([]*Area, 0, len(vmas))
	for _, v := range vmas {
		a, err := classify(pid, v, areas)
		if err != nil {
			if err := refuse(err); err != nil {
				return nil, err
			}
			continue
		}
		areas = append(areas, a)
	}
	return areas, nil
}

// classify is the area of v; areas are those before it. Its steps: the
// entry of the range, the kind of mapping (what backs it), the smaps
// flags that add MAP_ flags or refuse it, the madvise advice.
func classify(pid int, v proc.VMA, areas []*Area) (*Area, error) {
	a := &Area{E: newEntry(v), MayWrite: v.HasFlag("mw")}
	k := kindOf(pid, v)
	if k == nil {
		return nil, fmt.Errorf("vma %#x-%#x of pid %d (%q, inode %d): %w", v.Start, v.End, pid, v.Path, v.Inode, ErrUnsupportedVMA)
	}
	var prev *Area
	if len(areas) > 0 {
		prev = areas[len(areas)-1]
	}
	status, flags, err := k.fill(pid, v, a, prev)
	if err != nil {
		return nil, err
	}
	flags |= shareFlag(v)
	sf, ss := smapsFlags(v)
	flags, status = flags|sf, status|ss
	if err := checkIO(pid, v, status); err != nil {
		return nil, err
	}
	if madv := madvise(v); madv != 0 {
		a.E.Madv = proto.Uint64(madv)
	}
	a.E.Flags = proto.Uint32(flags)
	a.E.Status = proto.Uint32(status)
	return a, nil
}

// newEntry is the image entry of v before it is classified.
func newEntry(v proc.VMA) *vma.VmaEntry {
	return &vma.VmaEntry{
		Start:  proto.Uint64(v.Start),
		End:    proto.Uint64(v.End),
		Pgoff:  proto.Uint64(v.Offset),
		Shmid:  proto.Uint64(0),
		Fd:     proto.Int64(-1),
		Prot:   proto.Uint32(prot(v)),
		Flags:  proto.Uint32(0),
		Status: proto.Uint32(0),
	}
}

// vmaKind is a kind of mapping stasis dumps: match tells a VMA of the
// kind; fill returns its status bits and MAP_ flags (beside
// MAP_PRIVATE/MAP_SHARED) and records in a what backs it.
type vmaKind struct {
	match func(pid int, v proc.VMA) bool
	fill  func(pid int, v proc.VMA, a, prev *Area) (status, flags uint32, err error)
}

// vmaKinds are tried in order; the first that matches classifies the
// VMA, and a VMA none matches cannot be dumped.
var vmaKinds = []vmaKind{
	// The kernel's areas are private anonymous memory to criu, which
	// checks that at restore.
	{pathIs("[vsyscall]"), fixed(AreaVsyscall|AnonPrivate, unix.MAP_ANONYMOUS)},
	{pathIs("[vdso]"), fixed(AreaRegular|AreaVDSO|AnonPrivate, unix.MAP_ANONYMOUS)},
	{pathIs("[vvar]", "[vvar_vclock]"), fixed(AreaRegular|AreaVVAR|AnonPrivate, unix.MAP_ANONYMOUS)},
	{pathIs("[uprobes]"), fixed(AreaUprobes, 0)},
	{isAnon, fillAnon},
	{isSysv, fillSysv},
	// The completion ring of an AIO context (aio.go).
	{isAioRing, fixed(AreaRegular|AreaAIORing, 0)},
	{isMemfd, fillMemfd},
	// The ring of a packet socket (PACKET_RX_RING/TX_RING).
	{isSocketMap, fillSocketMap},
	// The rings of an io_uring instance: kept as a socket's ring is,
	// mapped again from the instance package files makes anew.
	{isUringMap, fillSocketMap},
	{isFile, fillFile},
}

// kindOf is the kind of v, nil if stasis cannot dump it.
func kindOf(pid int, v proc.VMA) *vmaKind {
	for i := range vmaKinds {
		if vmaKinds[i].match(pid, v) {
			return &vmaKinds[i]
		}
	}
	return nil
}

func pathIs(paths ...string) func(int, proc.VMA) bool {
	return func(_ int, v proc.VMA) bool {
		for _, p := range paths {
			if v.Path == p {
				return true
			}
		}
		return false
	}
}

// fixed is the fill of a kind whose bits say all, with nothing behind.
func fixed(status, flags uint32) func(int, proc.VMA, *Area, *Area) (uint32, uint32, error) {
	return func(int, proc.VMA, *Area, *Area) (uint32, uint32, error) { return status, flags, nil }
}

// isAnon: anonymous memory, private or shared. MAP_SHARED|MAP_ANONYMOUS
// memory is a shmem file the kernel names after /dev/zero.
func isAnon(_ int, v proc.VMA) bool {
	named := v.Path == "" || v.Path == "[heap]" || v.Path == "[stack]" || strings.HasPrefix(v.Path, "[anon:")
	return v.Inode == 0 && named || v.Shared && v.Deleted && v.Path == "/dev/zero"
}

func fillAnon(pid int, v proc.VMA, a, _ *Area) (uint32, uint32, error) {
	status := uint32(AreaRegular | AnonPrivate)
	if v.Shared {
		// The shmem object's inode names it: processes mapping the
		// same one share it (criu's shmid).
		status = AreaRegular | AnonShared
		var st unix.Stat_t
		mf := fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, v.Start, v.End)
		if err := unix.Stat(mf, &st); err != nil {
			return 0, 0, fmt.Errorf("vma %#x-%#x of pid %d (shared anonymous): %w", v.Start, v.End, pid, err)
		}
		a.E.Shmid = proto.Uint64(st.Ino)
	}
	if v.Path == "[heap]" {
		status |= AreaHeap
	}
	return status, unix.MAP_ANONYMOUS, nil
}

func isSysv(pid int, v proc.VMA) bool {
	_, ok := sysvSegment(pid, v)
	return ok
}

func fillSysv(pid int, v proc.VMA, a, prev *Area) (uint32, uint32, error) {
	shmid, _ := sysvSegment(pid, v)
	if err := checkSysvDump(pid, v, shmid, prev); err != nil {
		return 0, 0, err
	}
	a.E.Shmid = proto.Uint64(shmid)
	// As criu writes it (its restore attaches only what is also
	// VMA_ANON_SHARED with MAP_ANONYMOUS); stasis' own code tells it from
	// shared anonymous memory by AreaSysVIPC.
	a.E.Fdflags = proto.Uint32(unix.O_RDONLY)
	if v.Write {
		a.E.Fdflags = proto.Uint32(unix.O_RDWR)
	}
	return AreaRegular | AreaSysVIPC | AnonShared, unix.MAP_ANONYMOUS, nil
}

func isAioRing(_ int, v proc.VMA) bool { return v.Shared && v.Deleted && v.Path == "/[aio]" }

func isMemfd(_ int, v proc.VMA) bool { return v.Deleted && strings.HasPrefix(v.Path, "/memfd:") }

func fillMemfd(_ int, v proc.VMA, a, _ *Area) (uint32, uint32, error) {
	a.Path, a.Memfd = v.Path, true
	return AreaRegular | fileStatus(v) | AreaMemfd, 0, nil
}

func isFile(_ int, v proc.VMA) bool { return v.Inode != 0 && strings.HasPrefix(v.Path, "/") }

// fillFile: a deleted file (a binary replaced while it runs, a temporary
// file) is mapped by its map_files link: package files makes it a ghost
// file.
func fillFile(pid int, v proc.VMA, a, _ *Area) (uint32, uint32, error) {
	a.Path = v.Path
	var st unix.Stat_t
	mf := fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, v.Start, v.End)
	if err := unix.Stat(mf, &st); err != nil {
		return 0, 0, fmt.Errorf("vma %#x-%#x of pid %d (%s): %w", v.Start, v.End, pid, v.Path, err)
	}
	a.Dev, a.Ino = st.Dev, st.Ino
	if st.Ino != v.Inode {
		return 0, 0, fmt.Errorf("vma %#x-%#x of pid %d: %s was replaced on disk (inode %d, mapped %d): %w", v.Start, v.End, pid, v.Path, st.Ino, v.Inode, ErrUnsupportedVMA)
	}
	return AreaRegular | fileStatus(v), 0, nil
}

// isSocketMap: a socket's own memory mapped by the task: the rings of a
// packet socket are the only socket memory that can be mapped.
func isSocketMap(_ int, v proc.VMA) bool { return v.Shared && strings.HasPrefix(v.Path, "socket:[") }

func isUringMap(_ int, v proc.VMA) bool { return v.Shared && v.Path == "anon_inode:[io_uring]" }

// fillSocketMap: criu's socket VMA. Its pages are the ring's, which the
// restore does not keep (criu neither): the socket's restore sets a new,
// empty ring up, mapped again at the same address.
func fillSocketMap(pid int, v proc.VMA, a, _ *Area) (uint32, uint32, error) {
	var st unix.Stat_t
	mf := fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, v.Start, v.End)
	if err := unix.Stat(mf, &st); err != nil {
		return 0, 0, fmt.Errorf("vma %#x-%#x of pid %d (%s): %w", v.Start, v.End, pid, v.Path, err)
	}
	a.Dev, a.Ino = st.Dev, st.Ino
	return AreaRegular | AreaSocket, 0, nil
}

func fileStatus(v proc.VMA) uint32 {
	if v.Shared {
		return FileShared
	}
	return FilePrivate
}

// mapDroppable is MAP_DROPPABLE (uapi linux/mman.h, 6.11): a mapping
// type of its own beside MAP_PRIVATE and MAP_SHARED, whose pages the
// kernel may drop under memory pressure (smaps VmFlags "dp"). criu 4.2
// records it the same way (MAP_DROPPABLE|MAP_ANONYMOUS).
const mapDroppable = 0x08

func shareFlag(v proc.VMA) uint32 {
	switch {
	case v.Shared:
		return unix.MAP_SHARED
	case v.HasFlag("dp"):
		return mapDroppable
	}
	return unix.MAP_PRIVATE
}

// smapsFlags are the MAP_ flags and status bits the smaps VmFlags of v
// show.
func smapsFlags(v proc.VMA) (flags, status uint32) {
	if v.HasFlag("gd") {
		flags |= unix.MAP_GROWSDOWN
		status |= AreaStack
	}
	if v.HasFlag("nr") {
		flags |= unix.MAP_NORESERVE
	}
	if v.HasFlag("lo") {
		flags |= unix.MAP_LOCKED // mlock'ed, as criu records it
	}
	return flags, status
}

// checkIO refuses device I/O memory, but for the vDSO's.
func checkIO(pid int, v proc.VMA, status uint32) error {
	if status&(AreaVDSO|AreaVVAR) == 0 && (v.HasFlag("io") || v.HasFlag("pf")) {
		return fmt.Errorf("vma %#x-%#x of pid %d (%s) is device I/O memory: %w", v.Start, v.End, pid, v.Path, ErrUnsupportedVMA)
	}
	return nil
}

// madvise is the advice recorded for v (vma_entry.madv).
func madvise(v proc.VMA) uint64 {
	var madv uint64
	for f, adv := range madvByVmFlag {
		if v.HasFlag(f) {
			madv |= 1 << adv
		}
	}
	return madv
}

func prot(v proc.VMA) uint32 {
	var p uint32
	if v.Read {
		p |= unix.PROT_READ
	}
	if v.Write {
		p |= unix.PROT_WRITE
	}
	if v.Exec {
		p |= unix.PROT_EXEC
	}
	return p
}

// SameOrigin reports whether two VMA entries (of a parent's and a child's
// image) describe the same mapping, as fork makes it: same range, kind,
// flags, file (as sameFile tells for two file ids) or shmem object, and
// offset. Protection and advice may differ.
func SameOrigin(a, b *vma.VmaEntry, sameFile func(a, b uint32) bool) bool {
	if a.GetStart() != b.GetStart() || a.GetEnd() != b.GetEnd() || a.GetStatus() != b.GetStatus() ||
		a.GetFlags() != b.GetFlags() || a.GetPgoff() != b.GetPgoff() {
		return false
	}
	switch {
	case a.GetStatus()&(FilePrivate|FileShared|AreaSocket) != 0:
		return sameFile(uint32(a.GetShmid()), uint32(b.GetShmid()))
	case a.GetStatus()&(AnonShared|AreaSysVIPC) != 0:
		return a.GetShmid() == b.GetShmid()
	}
	return true
}

// Dumpable reports whether the area's own pages may need saving: not
// those of a shared mapping, which belong to its file or shmem object.
// The vDSO's pages are saved although the restore takes this kernel's:
// criu's restore reads the dumped vDSO to compare its symbols with the
// host's. The vvar pages cannot be read (they are I/O memory).
func (a *Area) Dumpable() bool {
	s := a.E.GetStatus()
	if s&AreaRegular == 0 || s&(AreaVVAR|FileShared|AnonShared|AreaSysVIPC|AreaSocket) != 0 {
		return false
	}
	return true
}

// Mappable reports whether restore creates the VMA itself with mmap; the
// vDSO is placed by the kernel (arch_prctl) and vsyscall/uprobes belong
// to the kernel. An AIO ring is mapped to be filled, then replaced by a
// new context's (criu marks it AIORING alone, stasis also REGULAR).
func Mappable(e *vma.VmaEntry) bool {
	return e.GetStatus()&(AreaRegular|AreaAIORing) != 0 && e.GetStatus()&(AreaVDSO|AreaVVAR) == 0
}

// FileOpener returns an fd, valid in the task, of the file (or shared
// memory object) mapped by e; MapAreas closes it after the mmap.
type FileOpener func(e *vma.VmaEntry) (int, error)

// MapAreas re-creates every mappable VMA of the image at its address in
// the task t, except those in kept (inherited from the parent as they
// are). Areas that get pages from the image are made writable
// (process_vm_writev cannot write read-only memory); Protect sets the
// final protection.
func MapAreas(t remote.Task, vmas []*vma.VmaEntry, withPages, kept map[uint64]bool, open FileOpener) error {
	type ring struct {
		e        *vma.VmaEntry
		fd, prot uint64
	}
	var rings []ring // io_uring mappings, placed once all else is (uring.go)
	anon := anonMaps{t: t}
	for _, e := range vmas {
		if !Mappable(e) {
			continue
		}
		if e.GetStatus()&(FilePrivate|FileShared|AnonShared|AreaSocket|AreaSysVIPC) == 0 && !kept[e.GetStart()] {
			p := uint64(e.GetProt())
			if withPages[e.GetStart()] {
				p |= unix.PROT_READ | unix.PROT_WRITE
			}
			if err := anon.add(e, p); err != nil {
				return err
			}
			continue
		}
		// Every other area in its turn, after the anonymous ones before it.
		if err := anon.flush(); err != nil {
			return err
		}
		p := uint64(e.GetProt())
		if withPages[e.GetStart()] {
			p |= unix.PROT_READ | unix.PROT_WRITE
		}
		if kept[e.GetStart()] {
			if withPages[e.GetStart()] {
				if _, err := t.Call("mprotect", unix.SYS_MPROTECT, e.GetStart(), e.GetEnd()-e.GetStart(), p); err != nil {
					return fmt.Errorf("vma %#x-%#x: %w", e.GetStart(), e.GetEnd(), err)
				}
			}
			// A fork does not pass memory locks on: a child that
			// locked an inherited mapping itself locks it again.
			if e.GetFlags()&unix.MAP_LOCKED != 0 {
				if _, err := t.Call("mlock", unix.SYS_MLOCK, e.GetStart(), e.GetEnd()-e.GetStart()); err != nil {
					return fmt.Errorf("vma %#x-%#x: %w", e.GetStart(), e.GetEnd(), err)
				}
			}
			continue
		}
		if e.GetStatus()&AreaSysVIPC != 0 {
			if err := attachSysv(t, vmas, e); err != nil {
				return fmt.Errorf("pid %d: %w", t.HostPid(), err)
			}
			continue
		}
		flags := uint64(e.GetFlags()) | unix.MAP_FIXED
		fd := ^uint64(0)
		if e.GetStatus()&(FilePrivate|FileShared|AnonShared|AreaSocket) != 0 {
			// Shared anonymous memory too is mapped from its object's
			// file, so that every mapping of it shares it again; a
			// socket's ring from its socket.
			f, err := open(e)
			if err != nil {
				return fmt.Errorf("map vma %#x-%#x: %w", e.GetStart(), e.GetEnd(), err)
			}
			fd = uint64(f)
			flags &^= unix.MAP_ANONYMOUS
			if e.GetStatus()&AreaSocket != 0 && isUringFd(t.HostPid(), fd) {
				rings = append(rings, ring{e, fd, p})
				continue
			}
		} else {
			flags |= unix.MAP_ANONYMOUS
		}
		r, err := t.Call("mmap", unix.SYS_MMAP, e.GetStart(), e.GetEnd()-e.GetStart(), p, flags, fd, e.GetPgoff())
		if err != nil {
			return fmt.Errorf("vma %#x-%#x prot %#x flags %#x: %w", e.GetStart(), e.GetEnd(), p, flags, err)
		}
		if r != e.GetStart() {
			return fmt.Errorf("mmap vma %#x-%#x in pid %d landed at %#x", e.GetStart(), e.GetEnd(), t.HostPid(), r)
		}
		if fd != ^uint64(0) {
			if _, err := t.Call("close", unix.SYS_CLOSE, fd); err != nil {
				return err
			}
		}
	}
	if err := anon.flush(); err != nil {
		return err
	}
	for _, r := range rings {
		if err := placeUring(t, r.e, r.fd, r.prot); err != nil {
			return fmt.Errorf("pid %d: %w", t.HostPid(), err)
		}
		if _, err := t.Call("close", unix.SYS_CLOSE, r.fd); err != nil {
			return err
		}
	}
	return nil
}

// anonMaps gathers the mmaps of private anonymous areas, which need
// nothing but the call, and makes them in a row where the task can run
// calls as a table (remote.Seq): a process of 10,000 threads has 20,000
// such areas (a stack and its guard each), one injected call apiece
// otherwise.
type anonMaps struct {
	t     remote.Task
	areas []*vma.VmaEntry
	calls []remote.Call
}

// anonBatch bounds the mmaps gathered before they are made.
const anonBatch = 4096

func (a *anonMaps) add(e *vma.VmaEntry, prot uint64) error {
	flags := uint64(e.GetFlags()) | unix.MAP_FIXED | unix.MAP_ANONYMOUS
	a.areas = append(a.areas, e)
	a.calls = append(a.calls, remote.Call{Nr: unix.SYS_MMAP,
		Args: [6]uint64{e.GetStart(), e.GetEnd() - e.GetStart(), prot, flags, ^uint64(0), e.GetPgoff()}})
	if len(a.calls) >= anonBatch {
		return a.flush()
	}
	return nil
}

func (a *anonMaps) flush() error {
	if len(a.calls) == 0 {
		return nil
	}
	defer func() { a.areas, a.calls = a.areas[:0], a.calls[:0] }()
	seq, ok := a.t.(remote.Seq)
	if !ok {
		for i, c := range a.calls {
			r, err := a.t.Call("mmap", c.Nr, c.Args[:]...)
			if err := a.check(i, r, err); err != nil {
				return err
			}
		}
		return nil
	}
	res, errs, err := seq.Seq(a.calls)
	if err != nil {
		return err
	}
	for i := range a.calls {
		if err := a.check(i, res[i], errs[i]); err != nil {
			return err
		}
	}
	return nil
}

func (a *anonMaps) check(i int, r uint64, err error) error {
	e, c := a.areas[i], a.calls[i]
	if err != nil {
		return fmt.Errorf("vma %#x-%#x prot %#x flags %#x: mmap in pid %d: %w", e.GetStart(), e.GetEnd(), c.Args[2], c.Args[3], a.t.HostPid(), err)
	}
	if r != e.GetStart() {
		return fmt.Errorf("mmap vma %#x-%#x in pid %d landed at %#x", e.GetStart(), e.GetEnd(), a.t.HostPid(), r)
	}
	return nil
}

// Protect gives every VMA its dumped protection and madvise advice, and
// drops from kept private VMAs the pages the image does not have: they
// came from the parent, and the task had never made them its own.
func Protect(t remote.Task, vmas []*vma.VmaEntry, entries []*pagemap.PagemapEntry, withPages, kept map[uint64]bool) error {
	for _, e := range vmas {
		if !Mappable(e) {
			continue
		}
		start, size := e.GetStart(), e.GetEnd()-e.GetStart()
		if kept[start] && e.GetFlags()&(unix.MAP_PRIVATE|mapDroppable) != 0 {
			for _, gap := range gaps(start, e.GetEnd(), entries) {
				if _, err := t.Call("madvise(MADV_DONTNEED)", unix.SYS_MADVISE, gap[0], gap[1]-gap[0], unix.MADV_DONTNEED); err != nil {
					return fmt.Errorf("vma %#x-%#x: %w", start, e.GetEnd(), err)
				}
			}
		}
		if kept[start] || withPages[start] && e.GetProt() != unix.PROT_READ|unix.PROT_WRITE {
			if _, err := t.Call("mprotect", unix.SYS_MPROTECT, start, size, uint64(e.GetProt())); err != nil {
				return fmt.Errorf("vma %#x-%#x: %w", start, e.GetEnd(), err)
			}
		}
	}
	return adviseAll(t, vmas)
}

// adviseAll applies each VMA's madvise advice. Adjacent VMAs with the
// same advice take one call: a process with thousands of threads has
// thousands of stacks and guard pages, all with the same advice.
func adviseAll(t remote.Task, vmas []*vma.VmaEntry) error {
	var start, end, madv uint64
	flush := func() error {
		for adv := 0; adv < 64 && end > start; adv++ {
			if madv&(1<<adv) == 0 {
				continue
			}
			if _, err := t.Call("madvise", unix.SYS_MADVISE, start, end-start, uint64(adv)); err != nil {
				return fmt.Errorf("vmas %#x-%#x advice %d: %w", start, end, adv, err)
			}
		}
		return nil
	}
	for _, e := range vmas {
		if !Mappable(e) || e.GetMadv() == 0 {
			continue
		}
		if e.GetStart() == end && e.GetMadv() == madv {
			end = e.GetEnd()
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		start, end, madv = e.GetStart(), e.GetEnd(), e.GetMadv()
	}
	return flush()
}
