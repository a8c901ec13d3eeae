package mem

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/checksum"
	"github.com/stasis-cr/stasis/internal/progress"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

// How a dump copies pages into pages-N.img: straight from the task into
// the file's page cache, with one copy. The file is sized up front and
// mapped in windows of copyChunk; each window is populated
// (MADV_POPULATE_WRITE: the page cache pages are allocated and made
// writable in one call, where first-touch faults cost ~20 µs a page on
// these VMs) and process_vm_readv writes the task's pages into it. The
// CRC32C of its blocks is taken from the window while it is hot. Several
// workers copy windows in parallel: no inode lock is taken, unlike
// write(2), which ext4 serializes per file.
//
// criu does the same with one copy (its parasite vmsplices the pages
// into a pipe, splice(2) copies them into the page cache); stasis needs
// no code in the task and stays SIGKILL-safe: the task is only read.
//
// The old path (process_vm_readv into a buffer, then write(2): two
// copies) stays for writers that are not files (copyRuns).

// errNoMap: the pages image cannot be mapped; copyRuns streams it.
var errNoMap = errors.New("cannot be mapped")

// copyWorkers bounds the windows copied at once.
const copyWorkers = 4

// copyWindow is one window of the file and the task's ranges that fill
// it, in file order.
type copyWindow struct {
	off  int64
	size int
	runs []Run // parts of runs, in file order, covering size bytes
}

// copyToFile copies runs (in file order) from pid into f, which it sizes
// to their total, and returns the file's checksum. stop is called before
// each window; meter (may be nil) counts the bytes.
func copyToFile(pid int, runs []Run, f *os.File, stop func() error, meter *progress.Meter) (*checksum.Sum, error) {
	var total int64
	for _, r := range runs {
		total += int64(r.Pages * PageSize)
	}
	sum := &checksum.Sum{Size: total, Block: checksum.PagesBlock}
	if total == 0 {
		return sum, nil
	}
	if err := enoughSpace(f, total); err != nil {
		return nil, err
	}
	if err := f.Truncate(total); err != nil {
		return nil, err
	}
	m, err := unix.Mmap(int(f.Fd()), 0, PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		// A filesystem that cannot map files (some FUSE ones): the
		// caller streams instead.
		return nil, fmt.Errorf("map %s: %w: %w", f.Name(), errNoMap, err)
	}
	unix.Munmap(m)
	meter.Expect(uint64(total))
	wins := windows(runs, copyChunk)
	sum.CRC = make([]uint32, (total+checksum.PagesBlock-1)/checksum.PagesBlock)
	workers := min(runtime.GOMAXPROCS(0), copyWorkers, len(wins))
	work := make(chan copyWindow)
	errs := make(chan error, workers)
	var failed sync.Once
	quit := make(chan struct{})
	for w := 0; w < workers; w++ {
		go func() {
			var first error
			for win := range work {
				if first != nil {
					continue
				}
				if first = copyWindowTo(pid, f, win, sum.CRC); first != nil {
					failed.Do(func() { close(quit) })
				}
				meter.Add(uint64(win.size))
			}
			errs <- first
		}()
	}
	var first error
dispatch:
	for _, win := range wins {
		if stop != nil {
			if first = stop(); first != nil {
				break
			}
		}
		select {
		case work <- win:
		case <-quit:
			break dispatch
		}
	}
	close(work)
	for w := 0; w < workers; w++ {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return nil, first
	}
	return sum, nil
}

// windows cuts runs into windows of size bytes of the file (the last one
// shorter). size is a multiple of the checksum's block.
func windows(runs []Run, size int) []copyWindow {
	var out []copyWindow
	cur := copyWindow{}
	var off int64
	for _, r := range runs {
		addr, left := r.Addr, int(r.Pages*PageSize)
		for left > 0 {
			n := min(left, size-cur.size)
			cur.runs = append(cur.runs, Run{Addr: addr, Pages: uint64(n / PageSize), Shared: r.Shared})
			cur.size += n
			addr += uint64(n)
			left -= n
			if cur.size == size {
				out = append(out, cur)
				off += int64(size)
				cur = copyWindow{off: off}
			}
		}
	}
	if cur.size > 0 {
		out = append(out, cur)
	}
	return out
}

// copyWindowTo maps one window of f, fills it from pid and sums its
// blocks into crc.
func copyWindowTo(pid int, f *os.File, win copyWindow, crc []uint32) (err error) {
	m, err := unix.Mmap(int(f.Fd()), win.off, win.size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map %s at %d: %w", f.Name(), win.off, err)
	}
	defer unix.Munmap(m)
	// An I/O error under a mapped file is a SIGBUS in whoever touches it:
	// an error here, not a crash.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s at %d: %v", f.Name(), win.off, r)
		}
	}()
	if err := unix.Madvise(m, unix.MADV_POPULATE_WRITE); err != nil {
		if serr := enoughSpace(f, 0); serr != nil {
			return serr
		}
		if !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("populate %s at %d: %w", f.Name(), win.off, err)
		}
		// Before Linux 5.14: the copy faults the pages in.
	}
	ios := make([]ptrace.VMIO, 0, len(win.runs))
	at := 0
	for _, r := range win.runs {
		n := int(r.Pages * PageSize)
		ios = append(ios, ptrace.VMIO{Remote: r.Addr, Local: m[at : at+n], NoPin: r.Shared})
		at += n
	}
	if err := ptrace.ReadvMem(pid, ios); err != nil {
		return err
	}
	first := int(win.off / checksum.PagesBlock)
	for b := 0; b*checksum.PagesBlock < win.size; b++ {
		lo := b * checksum.PagesBlock
		crc[first+b] = checksum.BlockCRC(m[lo:min(lo+checksum.PagesBlock, win.size)])
	}
	return nil
}

// enoughSpace fails with ENOSPC when f's filesystem has less than need
// bytes free for an unprivileged user: a mapped file that runs out of
// space faults instead of saying so. need 0 asks whether any is left.
func enoughSpace(f *os.File, need int64) error {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil || st.Blocks == 0 {
		return nil // unknown: let the copy find out
	}
	avail := st.Bavail
	if os.Geteuid() == 0 {
		avail = st.Bfree // root may use the reserved blocks
	}
	free := int64(avail) * st.Bsize
	if free > need {
		return nil
	}
	return &os.PathError{Op: "write", Path: f.Name(), Err: fmt.Errorf("needs %d bytes, the filesystem has %d free: %w", need, free, unix.ENOSPC)}
}
