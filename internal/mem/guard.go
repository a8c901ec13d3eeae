package mem

import (
	"errors"
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/remote"
)

// Guard regions (madvise MADV_GUARD_INSTALL, Linux 6.13): page table
// markers inside a VMA that make its pages fault, without a VMA of their
// own, so neither smaps nor the VMAs show them. Their pages cannot be
// read (/proc/PID/mem gives EIO). The dump finds them with PAGEMAP_SCAN
// (PAGE_IS_GUARD) and writes each as a vma entry of status AreaGuard
// after the task's VMAs, as criu 4.2 does; the dump of pages skips them
// (pagemap bit PM_GUARD_REGION); the restore installs them again once
// the pages are in.

const (
	// AreaGuard is criu's VMA_AREA_GUARD: the entry is a guard region,
	// not a VMA.
	AreaGuard = 1 << 16

	userSpaceEnd = 0x7ffffffff000
)

// GuardAreas returns the guard regions of pid as vma entries of status
// AreaGuard, none on a kernel that cannot tell them (and so cannot
// have them: PAGE_IS_GUARD came after MADV_GUARD_INSTALL by three
// releases, a gap this ignores).
func GuardAreas(pid int) ([]*vma.VmaEntry, error) {
	f, err := linux.OpenFile(fmt.Sprintf("/proc/%d/pagemap", pid), os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []*vma.VmaEntry
	vec := make([]linux.PageRegion, 256)
	for at := uint64(0); at < userSpaceEnd; {
		n, end, err := pagemapScan(f, at, userSpaceEnd, linux.PageIsGuard, 0, vec)
		if errors.Is(err, unix.EINVAL) && at == 0 {
			return nil, nil // no PAGE_IS_GUARD
		}
		if err != nil {
			return nil, fmt.Errorf("guard regions of pid %d: PAGEMAP_SCAN at %#x: %w", pid, at, err)
		}
		for _, r := range vec[:n] {
			if l := len(out); l > 0 && out[l-1].GetEnd() == r.Start {
				out[l-1].End = proto.Uint64(r.End)
				continue
			}
			out = append(out, &vma.VmaEntry{
				Start: proto.Uint64(r.Start), End: proto.Uint64(r.End),
				Pgoff: proto.Uint64(0), Shmid: proto.Uint64(0), Fd: proto.Int64(-1),
				Prot: proto.Uint32(0), Flags: proto.Uint32(0), Status: proto.Uint32(AreaGuard),
			})
		}
		if end <= at {
			break
		}
		at = end
	}
	return out, nil
}

// splitGuards takes the guard entries out of vmas (the image's), so that
// the VMAs alone remain in address order.
func splitGuards(vmas []*vma.VmaEntry) (rest, guards []*vma.VmaEntry) {
	for _, v := range vmas {
		if v.GetStatus()&AreaGuard != 0 {
			guards = append(guards, v)
		} else {
			rest = append(rest, v)
		}
	}
	return rest, guards
}

// installGuards puts the guard regions back into task t. Inherited from a
// parent that had them, they are there already; installing is idempotent.
func installGuards(t remote.Task, guards []*vma.VmaEntry) error {
	for _, g := range guards {
		if _, err := t.Call("madvise(MADV_GUARD_INSTALL)", unix.SYS_MADVISE, g.GetStart(), g.GetEnd()-g.GetStart(), unix.MADV_GUARD_INSTALL); err != nil {
			return fmt.Errorf("guard region %#x-%#x: %w", g.GetStart(), g.GetEnd(), err)
		}
	}
	return nil
}
