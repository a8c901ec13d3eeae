package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"golang.org/x/sys/unix"
)

const pageSize = 4096

// ioChunk is the buffer size of the file limits: the size of the buffers
// stasis streams pages through (internal/mem copyChunk).
const ioChunk = 16 << 20

// limits are this machine's ceilings, best of n, in bytes per second.
type limits struct {
	memcpy, write, read float64
	fault               time.Duration // first touch of one fresh anonymous page
	faultBytes          int64
}

// restoreLimit is what a restore can at best do: read the image from the
// page cache and put it into the task's memory.
func (l limits) restoreLimit() float64 { return min(l.memcpy, l.read) }

// restoreTouchLimit adds the first-touch fault of each page of fresh
// memory, which a restore into a new process cannot avoid, to the copy.
func (l limits) restoreTouchLimit() float64 {
	touch := rate(pageSize, l.fault)
	return 1 / (1/l.restoreLimit() + 1/touch)
}

func measureLimits(dir string, size int64, n int) (limits, error) {
	var l limits
	progress("limits: memcpy of %s", fmtSize(size))
	l.memcpy = memcpyBW(size, n)
	progress("limits: file write and read of %s in %s", fmtSize(size), dir)
	var err error
	if l.write, l.read, err = fileBW(filepath.Join(dir, "limit.dat"), size, n); err != nil {
		return l, err
	}
	l.faultBytes = min(size, 256<<20)
	progress("limits: first touch of %s of anonymous memory", fmtSize(l.faultBytes))
	if l.fault, err = faultCost(l.faultBytes, n); err != nil {
		return l, err
	}
	return l, nil
}

func memcpyBW(size int64, n int) float64 {
	src := make([]byte, size)
	dst := make([]byte, size)
	for i := int64(0); i < size; i += pageSize {
		src[i] = byte(i>>12) | 1
		dst[i] = 0
	}
	best := time.Duration(1 << 62)
	for range n {
		t0 := time.Now()
		copy(dst, src)
		d := time.Since(t0)
		progress("  memcpy try: %s", fmtRate(rate(size, d)))
		best = min(best, d)
	}
	src, dst = nil, nil
	debug.FreeOSMemory()
	return rate(size, best)
}

// fileBW writes size bytes to a new file (no fsync: the cost a dump pays
// is the copy plus the page-cache allocation) and reads them back hot.
func fileBW(path string, size int64, n int) (wr, rd float64, err error) {
	buf := make([]byte, ioChunk)
	for i := range buf {
		buf[i] = byte(i*7 + 1)
	}
	defer os.Remove(path)
	bestW := time.Duration(1 << 62)
	for range n {
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			return 0, 0, err
		}
		t0 := time.Now()
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return 0, 0, err
		}
		for left := size; left > 0; {
			k := min(left, int64(len(buf)))
			if _, err := f.Write(buf[:k]); err != nil {
				f.Close()
				return 0, 0, err
			}
			left -= k
		}
		if err := f.Close(); err != nil {
			return 0, 0, err
		}
		d := time.Since(t0)
		progress("  write try: %s", fmtRate(rate(size, d)))
		bestW = min(bestW, d)
	}
	bestR := time.Duration(1 << 62)
	for range n {
		t0 := time.Now()
		f, err := os.Open(path)
		if err != nil {
			return 0, 0, err
		}
		var got int64
		for {
			k, err := f.Read(buf)
			got += int64(k)
			if err == io.EOF {
				break
			}
			if err != nil {
				f.Close()
				return 0, 0, err
			}
		}
		f.Close()
		if got != size {
			return 0, 0, fmt.Errorf("read back %d bytes of %s, wrote %d", got, path, size)
		}
		d := time.Since(t0)
		progress("  read try: %s", fmtRate(rate(size, d)))
		bestR = min(bestR, d)
	}
	return rate(size, bestW), rate(size, bestR), nil
}

// faultCost is the time of one write fault on fresh anonymous memory, the
// path a restore takes when it fills memory by copy_to_user.
func faultCost(size int64, n int) (time.Duration, error) {
	best := time.Duration(1 << 62)
	for range n {
		m, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			return 0, err
		}
		t0 := time.Now()
		for i := 0; i < len(m); i += pageSize {
			m[i] = 1
		}
		d := time.Since(t0)
		progress("  first touch try: %.2f µs/page", float64(d.Nanoseconds())/1e3/float64(size/pageSize))
		best = min(best, d)
		if err := unix.Munmap(m); err != nil {
			return 0, err
		}
	}
	return best / time.Duration(size/pageSize), nil
}

func rate(bytes int64, d time.Duration) float64 { return float64(bytes) / d.Seconds() }
