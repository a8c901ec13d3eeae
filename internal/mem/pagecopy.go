package mem

import (
	"fmt"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/checksum"
	"github.com/stasis-cr/stasis/internal/progress"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

// How a dump copies pages into pages-N.img. The file is cut into windows
// of one checksum block (1 MiB); each worker owns one buffer of that size,
// which stays in its CPU's cache: process_vm_readv copies a window of the
// task's pages into it, its CRC32C is taken there, and pwrite(2) copies it
// into the file's page cache at the window's offset. Memory sees each
// byte read once from the task and written once into the page cache, the
// traffic of criu's single copy (its parasite vmsplices the pages into a
// pipe, splice(2) copies them into the page cache), and stasis needs no
// code in the task: it stays SIGKILL-safe, the task is only read.
//
// Measured against what this replaced (the file mapped in 16 MiB windows,
// MADV_POPULATE_WRITE, process_vm_readv into the mapping, sums from it):
// a fault on a hole of a mapped file zeroes the new page-cache folio
// before the copy overwrites it, and a 16 MiB destination misses every
// cache. A 1 GiB victim made, dumped, restored and killed in turn: 1.3-1.9
// s of CPU for the dump there, 0.9-1.25 s here; a copy whose page cache
// reuses memory freed just before: 0.5-0.9 s there, 0.2-0.35 s here. Two
// workers: ext4 serializes the page-cache copies of one file on its inode
// lock, but one worker's read and sums overlap the other's write; more
// would only wait for the lock.

// copyWorkers bounds the windows copied at once.
const copyWorkers = 2

// copyWindowSize is the file's share one worker copies at a time: one
// checksum block, small enough to stay in a CPU's cache between the read
// and the write.
const copyWindowSize = checksum.PagesBlock

// copyWriteSize is what one pwrite(2) copies. ext4 gives the page cache
// folios as large as a write (up to 2 MiB): 1 MiB writes take 1 MiB
// blocks of free memory, which on a VM with free page reporting are the
// blocks handed back to the host, each page of them faulted in again on
// first touch. 64 KiB folios come from the memory freed last, still
// backed: the page copy of 1 GiB took 0.7-1.1 s of CPU with 64 KiB
// writes against 1.8-2.2 s with 1 MiB ones, in the same sequence
// (victim made, dumped, restored, killed). 16 writes a window cost
// nothing next to that.
const copyWriteSize = 64 << 10

// copyWindow is one window of the file and the task's ranges that fill
// it, in file order.
type copyWindow struct {
	off  int64
	size int
	runs []Run // parts of runs, in file order, covering size bytes
}

// copyToFile copies runs (in file order) from pid into f, which it
// truncates first, and returns the file's checksum. stop is called before
// each window; meter (may be nil) counts the bytes.
func copyToFile(pid int, runs []Run, f *os.File, stop func() error, meter *progress.Meter) (*checksum.Sum, error) {
	var total int64
	for _, r := range runs {
		total += int64(r.Pages * PageSize)
	}
	sum := &checksum.Sum{Size: total, Block: checksum.PagesBlock}
	// Only a file that holds something is truncated: ext4 flushes a file
	// truncated to nothing when it is closed (auto_da_alloc), which
	// would start writing the whole image to disk at once.
	if fi, err := f.Stat(); err != nil {
		return nil, err
	} else if fi.Size() > 0 {
		if err := f.Truncate(0); err != nil {
			return nil, err
		}
	}
	if total == 0 {
		return sum, nil
	}
	// Say so before copying gigabytes into a filesystem that cannot
	// hold them.
	if err := enoughSpace(f, total); err != nil {
		return nil, err
	}
	meter.Expect(uint64(total))
	wins := windows(runs, copyWindowSize)
	sum.CRC = make([]uint32, (total+checksum.PagesBlock-1)/checksum.PagesBlock)
	err := eachWindow(wins, copyWorkers, int(min(int64(copyWindowSize), total)), stop, func(win copyWindow, buf []byte) error {
		err := copyWindowTo(pid, f, win, buf, sum.CRC)
		meter.Add(uint64(win.size))
		return err
	})
	if err != nil {
		return nil, err
	}
	return sum, nil
}

// eachWindow runs do on every window, on up to workers goroutines (no
// more than the CPUs), each with a buffer of bufSize bytes of its own.
// stop is asked before each window is handed out; the first error, of
// stop or of a window, ends the run (the windows under way finish) and is
// returned.
func eachWindow[W any](wins []W, workers, bufSize int, stop func() error, do func(W, []byte) error) error {
	workers = min(runtime.GOMAXPROCS(0), workers, len(wins))
	work := make(chan W, workers)
	errs := make(chan error, workers)
	var failed sync.Once
	quit := make(chan struct{})
	for w := 0; w < workers; w++ {
		go func() {
			buf, put := winBufs.Get(bufSize)
			defer put()
			var first error
			for win := range work {
				if first != nil {
					continue
				}
				if first = do(win, buf); first != nil {
					failed.Do(func() { close(quit) })
				}
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
	return first
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

// copyWindowTo reads one window from pid into buf, sums its blocks into
// crc and writes it at its offset of f.
func copyWindowTo(pid int, f *os.File, win copyWindow, buf []byte, crc []uint32) error {
	buf = buf[:win.size]
	ios := make([]ptrace.VMIO, 0, len(win.runs))
	at := 0
	for _, r := range win.runs {
		n := int(r.Pages * PageSize)
		ios = append(ios, ptrace.VMIO{Remote: r.Addr, Local: buf[at : at+n], NoPin: r.Shared})
		at += n
	}
	if err := ptrace.ReadvMem(pid, ios); err != nil {
		return err
	}
	first := int(win.off / checksum.PagesBlock)
	for b := 0; b*checksum.PagesBlock < win.size; b++ {
		lo := b * checksum.PagesBlock
		crc[first+b] = checksum.BlockCRC(buf[lo:min(lo+checksum.PagesBlock, win.size)])
	}
	// os.File.WriteAt writes on after a short write and fails only with
	// an error (ENOSPC, EIO, EFBIG).
	for at := 0; at < len(buf); at += copyWriteSize {
		if _, err := f.WriteAt(buf[at:min(at+copyWriteSize, len(buf))], win.off+int64(at)); err != nil {
			return fmt.Errorf("write at %d: %w", win.off+int64(at), err)
		}
	}
	return nil
}

// enoughSpace fails with ENOSPC when f's filesystem has less than need
// bytes free for an unprivileged user, before a copy of that size starts.
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
