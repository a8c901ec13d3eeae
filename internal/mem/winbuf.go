package mem

import "sync"

// winBufSize is the size of the window buffers kept between copies: the
// dump's and the restore's windows (copyWindowSize, fillWindowSize).
const winBufSize = 1 << 20

// winBufs keeps the window buffers of eachWindow between runs, as many
// as run at once (4 MiB for the life of stasis). A tree's dump copies
// the pages of each process in turn; a buffer made for each one is fresh
// memory every time (Go's heap hands freed spans back to the kernel, or
// grows), and on these VMs every first touch of a page is a fault of
// ~20 µs: 256 faults, ~5 ms, for each process of 1 MiB, more than its
// copy. A sync.Pool would not do: each garbage collection empties it,
// and a dump of small processes collects every few of them.
var winBufs struct {
	sync.Mutex
	free [][]byte
}

// maxWinBufs bounds the buffers kept: the workers of eachWindow, for two
// runs at once (a dump copies two processes' pages at a time).
const maxWinBufs = 2 * max(copyWorkers, fillWorkers)

// getWinBuf returns a buffer of n bytes, a kept one when n is not more
// than winBufSize, and the function that gives it back.
func getWinBuf(n int) ([]byte, func()) {
	if n > winBufSize {
		return make([]byte, n), func() {}
	}
	winBufs.Lock()
	var b []byte
	if k := len(winBufs.free); k > 0 {
		b, winBufs.free = winBufs.free[k-1], winBufs.free[:k-1]
	}
	winBufs.Unlock()
	if b == nil {
		b = make([]byte, winBufSize)
	}
	return b[:n], func() {
		winBufs.Lock()
		if len(winBufs.free) < maxWinBufs {
			winBufs.free = append(winBufs.free, b[:winBufSize])
		}
		winBufs.Unlock()
	}
}
