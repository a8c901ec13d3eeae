package mem

import (
	"fmt"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/proc"
)

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
}

func (a *Area) Has(status uint32) bool { return a.E.GetStatus()&status != 0 }
func (a *Area) Start() uint64          { return a.E.GetStart() }
func (a *Area) End() uint64            { return a.E.GetEnd() }

// ErrUnsupportedVMA is wrapped by errors about mappings stasis cannot
// checkpoint yet.
var ErrUnsupportedVMA = fmt.Errorf("mapping not supported")

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

// classify is the area of v; areas are those before it.
func classify(pid int, v proc.VMA, areas []*Area) (*Area, error) {
	e := &vma.VmaEntry{
		Start:  proto.Uint64(v.Start),
		End:    proto.Uint64(v.End),
		Pgoff:  proto.Uint64(v.Offset),
		Shmid:  proto.Uint64(0),
		Fd:     proto.Int64(-1),
		Prot:   proto.Uint32(prot(v)),
		Flags:  proto.Uint32(0),
		Status: proto.Uint32(0),
	}
	a := &Area{E: e}
	flags := uint32(unix.MAP_PRIVATE)
	if v.Shared {
		flags = unix.MAP_SHARED
	}
	status := uint32(AreaRegular)
	shmid, sysv := sysvSegment(pid, v)
	switch {
	// The kernel's areas are private anonymous memory to criu, which
	// checks that at restore.
	case v.Path == "[vsyscall]":
		status = AreaVsyscall | AnonPrivate
		flags |= unix.MAP_ANONYMOUS
	case v.Path == "[vdso]":
		status |= AreaVDSO | AnonPrivate
		flags |= unix.MAP_ANONYMOUS
	case v.Path == "[vvar]" || v.Path == "[vvar_vclock]":
		status |= AreaVVAR | AnonPrivate
		flags |= unix.MAP_ANONYMOUS
	case v.Path == "[uprobes]":
		status = AreaUprobes
	case v.Inode == 0 && (v.Path == "" || v.Path == "[heap]" || v.Path == "[stack]" || strings.HasPrefix(v.Path, "[anon:")),
		// MAP_SHARED|MAP_ANONYMOUS memory is a shmem file the kernel
		// names after /dev/zero.
		v.Shared && v.Deleted && v.Path == "/dev/zero":
		flags |= unix.MAP_ANONYMOUS
		if v.Shared {
			// The shmem object's inode names it: processes mapping
			// the same one share it (criu's shmid).
			status |= AnonShared
			var st unix.Stat_t
			mf := fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, v.Start, v.End)
			if err := unix.Stat(mf, &st); err != nil {
				return nil, fmt.Errorf("vma %#x-%#x of pid %d (shared anonymous): %w", v.Start, v.End, pid, err)
			}
			e.Shmid = proto.Uint64(st.Ino)
		} else {
			status |= AnonPrivate
		}
		if v.Path == "[heap]" {
			status |= AreaHeap
		}
	case sysv:
		var prev *Area
		if len(areas) > 0 {
			prev = areas[len(areas)-1]
		}
		if err := checkSysvDump(pid, v, shmid, prev); err != nil {
			return nil, err
		}
		// As criu writes it (its restore attaches only what is also
		// VMA_ANON_SHARED with MAP_ANONYMOUS); stasis' own code tells it
		// from shared anonymous memory by AreaSysVIPC.
		status |= AreaSysVIPC | AnonShared
		flags |= unix.MAP_ANONYMOUS
		e.Shmid = proto.Uint64(shmid)
		e.Fdflags = proto.Uint32(unix.O_RDONLY)
		if v.Write {
			e.Fdflags = proto.Uint32(unix.O_RDWR)
		}
	case v.Shared && v.Deleted && v.Path == "/[aio]":
		// The completion ring of an AIO context (aio.go).
		status |= AreaAIORing
	case v.Deleted && strings.HasPrefix(v.Path, "/memfd:"):
		if v.Shared {
			status |= FileShared | AreaMemfd
		} else {
			status |= FilePrivate | AreaMemfd
		}
		a.Path, a.Memfd = v.Path, true
	case v.Inode != 0 && strings.HasPrefix(v.Path, "/"):
		// A deleted file (a binary replaced while it runs, a temporary
		// file) is mapped by its map_files link: package files makes
		// it a ghost file.
		if v.Shared {
			status |= FileShared
		} else {
			status |= FilePrivate
		}
		a.Path = v.Path
		var st unix.Stat_t
		mf := fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, v.Start, v.End)
		if err := unix.Stat(mf, &st); err != nil {
			return nil, fmt.Errorf("vma %#x-%#x of pid %d (%s): %w", v.Start, v.End, pid, v.Path, err)
		}
		a.Dev, a.Ino = st.Dev, st.Ino
		if st.Ino != v.Inode {
			return nil, fmt.Errorf("vma %#x-%#x of pid %d: %s was replaced on disk (inode %d, mapped %d): %w", v.Start, v.End, pid, v.Path, st.Ino, v.Inode, ErrUnsupportedVMA)
		}
	default:
		return nil, fmt.Errorf("vma %#x-%#x of pid %d (%q, inode %d): %w", v.Start, v.End, pid, v.Path, v.Inode, ErrUnsupportedVMA)
	}
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
	if status&(AreaVDSO|AreaVVAR) == 0 && (v.HasFlag("io") || v.HasFlag("pf")) {
		return nil, fmt.Errorf("vma %#x-%#x of pid %d (%s) is device I/O memory: %w", v.Start, v.End, pid, v.Path, ErrUnsupportedVMA)
	}
	var madv uint64
	for f, adv := range madvByVmFlag {
		if v.HasFlag(f) {
			madv |= 1 << adv
		}
	}
	if madv != 0 {
		e.Madv = proto.Uint64(madv)
	}
	e.Flags = proto.Uint32(flags)
	e.Status = proto.Uint32(status)
	return a, nil
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
	case a.GetStatus()&(FilePrivate|FileShared) != 0:
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
	if s&AreaRegular == 0 || s&(AreaVVAR|FileShared|AnonShared|AreaSysVIPC) != 0 {
		return false
	}
	return true
}
