package mem

import (
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/remote"
)

// The rings of an io_uring instance. The kernel maps them only where it
// chooses: io_uring's get_unmapped_area refuses any address the caller
// gives (MAP_FIXED, a hint, or mremap to a fixed address: EINVAL), lest
// user space break the cache aliasing of the kernel's memory. So the
// restore leaves it one choice: every free range of the address space
// large enough for the mapping, but the mapping's own, is covered with
// placeholders (PROT_NONE, reserving nothing); the ring is mapped where
// the kernel wants, which is the only place left; the placeholders go.

// userTop is the end of the 47-bit user address space (TASK_SIZE).
const userTop = 0x7ffffffff000

// isUringFd tells whether fd of the task with host pid pid is an io_uring.
func isUringFd(pid int, fd uint64) bool {
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
	return err == nil && l == "anon_inode:[io_uring]"
}

// placeUring maps e's part of the io_uring instance open at fd in t at
// e's address, prot as given.
func placeUring(t remote.Task, e *vma.VmaEntry, fd, prot uint64) error {
	start, size := e.GetStart(), e.GetEnd()-e.GetStart()
	cur, err := proc.ReadMaps(t.HostPid())
	if err != nil {
		return err
	}
	low := uint64(os.Getpagesize())
	if b, err := os.ReadFile("/proc/sys/vm/mmap_min_addr"); err == nil {
		var v uint64
		if _, err := fmt.Sscan(string(b), &v); err == nil && v > low {
			low = (v + PageSize - 1) &^ (PageSize - 1)
		}
	}
	var holes [][2]uint64
	// A free range too small for the mapping is left as it is, but for
	// the ranges next to the mapping's own, which would make it larger.
	fill := func(a, b uint64, adjacent bool) error {
		if b <= a || b-a < size && !adjacent {
			return nil
		}
		r, err := t.Call("mmap", unix.SYS_MMAP, a, b-a, unix.PROT_NONE,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE|unix.MAP_FIXED_NOREPLACE, ^uint64(0), 0)
		if err != nil {
			return fmt.Errorf("placeholder %#x-%#x: %w", a, b, err)
		}
		if r != a {
			return fmt.Errorf("placeholder %#x-%#x landed at %#x", a, b, r)
		}
		holes = append(holes, [2]uint64{a, b})
		return nil
	}
	defer func() {
		for _, h := range holes {
			if _, err := t.Call("munmap", unix.SYS_MUNMAP, h[0], h[1]-h[0]); err != nil {
				// Left as PROT_NONE memory: harmless to the task.
				continue
			}
		}
	}()
	prev := low
	for _, v := range cur {
		if v.Start >= userTop {
			break
		}
		if v.End <= prev {
			continue
		}
		if err := fillAround(fill, prev, v.Start, start, start+size); err != nil {
			return err
		}
		prev = max(prev, v.End)
	}
	if err := fillAround(fill, prev, userTop, start, start+size); err != nil {
		return err
	}
	r, err := t.Call("mmap", unix.SYS_MMAP, 0, size, prot, unix.MAP_SHARED, fd, e.GetPgoff())
	if err != nil {
		return fmt.Errorf("io_uring vma %#x-%#x at offset %#x: %w", start, e.GetEnd(), e.GetPgoff(), err)
	}
	if r != start {
		t.Call("munmap", unix.SYS_MUNMAP, r, size)
		return fmt.Errorf("io_uring vma %#x-%#x: the kernel put it at %#x: %w", start, e.GetEnd(), r, ErrUnsupportedVMA)
	}
	return nil
}

// fillAround fills the free range a-b but for the part s-e in it.
func fillAround(fill func(a, b uint64, adjacent bool) error, a, b, s, e uint64) error {
	if e <= a || s >= b {
		return fill(a, b, false)
	}
	if s < a || e > b {
		return fmt.Errorf("io_uring vma %#x-%#x overlaps a mapping: %w", s, e, ErrUnsupportedVMA)
	}
	if err := fill(a, s, true); err != nil {
		return err
	}
	return fill(e, b, true)
}
