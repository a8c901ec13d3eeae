package checksum

import "sync"

// blockBufs keeps the read buffers of sumFileBlocks between files. A
// restore sums every image, a tree's one pages image of a MiB or two per
// process: a buffer made for each is fresh memory every time, and on
// these VMs a first touch costs a fault per page (~20 µs; 256 faults for
// a 1 MiB block). A sync.Pool would not do: a garbage collection empties
// it, and a restore collects often.
var blockBufs struct {
	sync.Mutex
	free [][]byte
}

// blockBufSize is the size of the buffers kept: PagesBlock, the biggest
// block a manifest of stasis names.
const blockBufSize = PagesBlock

// maxBlockBufs bounds the buffers kept (4 MiB): the files summed at once
// times the goroutines of one file, on two CPUs.
const maxBlockBufs = 4

// getBlockBuf returns a buffer of n bytes, a kept one when n is not more
// than blockBufSize, and the function that gives it back.
func getBlockBuf(n int64) ([]byte, func()) {
	if n > blockBufSize {
		return make([]byte, n), func() {}
	}
	blockBufs.Lock()
	var b []byte
	if k := len(blockBufs.free); k > 0 {
		b, blockBufs.free = blockBufs.free[k-1], blockBufs.free[:k-1]
	}
	blockBufs.Unlock()
	if b == nil {
		b = make([]byte, blockBufSize)
	}
	return b[:n], func() {
		blockBufs.Lock()
		if len(blockBufs.free) < maxBlockBufs {
			blockBufs.free = append(blockBufs.free, b[:blockBufSize])
		}
		blockBufs.Unlock()
	}
}
