package mem

import (
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/remote"
)

// System V shared memory (shmat). A segment lives in the kernel's IPC
// namespace, not in any process: killing the tree leaves it, and the
// restore attaches the same segment again (criu's VMA_AREA_SYSVIPC, whose
// shmid is the segment's id). A segment of stasis' own IPC namespace is not
// in the images, so such a dump restores on the host that still has it;
// one of a container's IPC namespace is (internal/ns), made again before
// any task attaches it.

// shm flags and mode bits (include/uapi/linux/shm.h).
const (
	shmRemap = 0o40000 // SHM_REMAP (SHM_RDONLY is unix's)
	shmDest  = 0o1000  // the segment goes with its last detach (IPC_RMID)
)

// shmemDev is the device of the kernel's internal shmem mount, which holds
// shared anonymous memory and System V segments alike.
var shmemDev = sync.OnceValue(func() uint64 {
	f, err := NewShmem(PageSize)
	if err != nil {
		return ^uint64(0)
	}
	defer f.Close()
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil {
		return ^uint64(0)
	}
	return st.Dev
})

// shmStat is IPC_STAT of segment shmid of the ipc namespace of pid, which
// may be a container's.
func shmStat(pid int, shmid uint64) (unix.SysvShmDesc, error) {
	var ds unix.SysvShmDesc
	err := linux.InNamespace(pid, unix.CLONE_NEWIPC, func() error {
		_, err := unix.SysvShmCtl(int(shmid), unix.IPC_STAT, &ds)
		return os.NewSyscallError("shmctl(IPC_STAT)", err)
	})
	return ds, err
}

// sysvSegment tells whether v is an attachment of a System V segment,
// and returns the segment's id: the kernel names its file "/SYSV<key>" on
// the internal shmem mount, with the id as inode number.
func sysvSegment(pid int, v proc.VMA) (uint64, bool) {
	if !v.Shared || !v.Deleted || !strings.HasPrefix(v.Path, "/SYSV") {
		return 0, false
	}
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, v.Start, v.End), &st); err != nil || st.Dev != shmemDev() {
		return 0, false
	}
	return st.Ino, true
}

// checkSysvDump refuses an attachment the restore could not make again: of
// a segment that goes with the tree (IPC_RMID was called on it), or a part
// of a segment whose start was unmapped (shmat maps whole segments).
func checkSysvDump(pid int, v proc.VMA, shmid uint64, prev *Area) error {
	ds, err := shmStat(pid, shmid)
	if err != nil {
		return fmt.Errorf("vma %#x-%#x of pid %d: System V shared memory segment %d: %w", v.Start, v.End, pid, shmid, err)
	}
	if ds.Perm.Mode&shmDest != 0 {
		return fmt.Errorf("vma %#x-%#x of pid %d: System V shared memory segment %d (key %#x) is marked for removal and goes with the tree; stasis does not dump IPC namespaces yet: %w",
			v.Start, v.End, pid, shmid, uint32(ds.Perm.Key), ErrUnsupportedVMA)
	}
	if v.Offset != 0 && (prev == nil || !prev.Has(AreaSysVIPC) || prev.E.GetShmid() != shmid || prev.End() != v.Start ||
		prev.E.GetPgoff()+prev.End()-prev.Start() != v.Offset) {
		return fmt.Errorf("vma %#x-%#x of pid %d: part of System V shared memory segment %d from offset %#x, its start unmapped: %w",
			v.Start, v.End, pid, shmid, v.Offset, ErrUnsupportedVMA)
	}
	return nil
}

// attachSysv attaches, in t, the segment of the System V VMA e at its
// address: the VMAs of one attachment follow each other from offset 0, and
// the first one attaches the whole segment. Each then gets its protection.
func attachSysv(t remote.Task, vmas []*vma.VmaEntry, e *vma.VmaEntry) error {
	start, shmid := e.GetStart(), e.GetShmid()
	if e.GetPgoff() == 0 {
		ds, err := shmStat(t.HostPid(), shmid)
		if err != nil {
			return fmt.Errorf("System V shared memory segment %d: %w (segments of stasis' ipc namespace live in the kernel, not in the images: restore on the host that has it)",
				shmid, err)
		}
		flags := uint64(shmRemap | unix.SHM_RDONLY)
		var size uint64
		for _, o := range vmas {
			if o.GetStatus()&AreaSysVIPC != 0 && o.GetShmid() == shmid && o.GetStart() >= start && o.GetStart()-start == o.GetPgoff() {
				size = max(size, o.GetEnd()-start)
				if o.GetProt()&unix.PROT_WRITE != 0 {
					flags &^= unix.SHM_RDONLY
				}
			}
		}
		if seg := (ds.Segsz + PageSize - 1) &^ (PageSize - 1); seg != size {
			return fmt.Errorf("System V shared memory segment %d has %d bytes, the image's attachment at %#x %d: another segment has its id now", shmid, ds.Segsz, start, size)
		}
		r, err := t.Call("shmat", unix.SYS_SHMAT, shmid, start, flags)
		if err != nil {
			return fmt.Errorf("attach System V shared memory segment %d at %#x: %w", shmid, start, err)
		}
		if r != start {
			return fmt.Errorf("System V shared memory segment %d attached at %#x, not %#x", shmid, r, start)
		}
	}
	if _, err := t.Call("mprotect", unix.SYS_MPROTECT, start, e.GetEnd()-start, uint64(e.GetProt())); err != nil {
		return fmt.Errorf("vma %#x-%#x: %w", start, e.GetEnd(), err)
	}
	return nil
}
