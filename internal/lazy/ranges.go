package lazy

import (
	"encoding/binary"
	"io"
	"sort"
)

var (
	io_EOF              = io.EOF
	io_ErrUnexpectedEOF = io.ErrUnexpectedEOF
)

func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }

// findIov returns the index of the range holding addr, or -1.
func findIov(iovs []iov, addr uint64) int {
	k := sort.Search(len(iovs), func(k int) bool { return iovs[k].end > addr })
	if k < len(iovs) && iovs[k].start <= addr {
		return k
	}
	return -1
}

// dropIovs takes [lo, hi) out of the ranges.
func dropIovs(iovs []iov, lo, hi uint64) []iov {
	if lo >= hi {
		return iovs
	}
	out := iovs[:0:0]
	for _, v := range iovs {
		if v.end <= lo || v.start >= hi {
			out = append(out, v)
			continue
		}
		if v.start < lo {
			out = append(out, iov{start: v.start, end: lo, img: v.img})
		}
		if v.end > hi {
			out = append(out, iov{start: hi, end: v.end, img: v.img + (hi - v.start)})
		}
	}
	return out
}

// remapIovs moves the parts of the ranges in [from, from+n) to to (an
// mremap): their image addresses stay.
func remapIovs(iovs []iov, from, to, n uint64) []iov {
	var moved []iov
	for _, v := range iovs {
		lo, hi := max(v.start, from), min(v.end, from+n)
		if lo < hi {
			moved = append(moved, iov{start: lo - from + to, end: hi - from + to, img: v.img + (lo - v.start)})
		}
	}
	out := dropIovs(iovs, from, from+n)
	// Whatever was at the destination is gone (mremap unmaps it).
	out = dropIovs(out, to, to+n)
	out = append(out, moved...)
	sort.Slice(out, func(i, j int) bool { return out[i].start < out[j].start })
	return out
}
