package mem

import (
	"encoding/binary"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
)

// zeroPFN is the frame of the kernel's shared zero page: private pages
// that map it were only read, never written, and need no saving (as in
// criu). 0 if it cannot be determined.
var zeroPFN = sync.OnceValue(func() uint64 {
	b, err := unix.Mmap(-1, 0, PageSize, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0
	}
	defer unix.Munmap(b)
	_ = *(*byte)(unsafe.Pointer(&b[0])) // fault the zero page in
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return 0
	}
	defer f.Close()
	var e [8]byte
	if _, err := f.ReadAt(e[:], int64(uintptr(unsafe.Pointer(&b[0]))/PageSize*8)); err != nil {
		return 0
	}
	v := binary.LittleEndian.Uint64(e[:])
	if v&linux.PmPresent == 0 {
		return 0
	}
	return v & linux.PmPFNMask
})
