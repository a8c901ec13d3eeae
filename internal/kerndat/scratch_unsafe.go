package kerndat

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// scratch is memory outside the Go heap for syscall arguments that hold
// pointers (iovecs, clone_args, pm_scan_arg): Go may move stack objects
// between taking an address and the syscall, mmap'ed memory never moves.
type scratch struct {
	b []byte
}

func newScratch(size int) (*scratch, error) {
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, err
	}
	return &scratch{b: b}, nil
}

func (s *scratch) free() { unix.Munmap(s.b) }

// addr is the address of byte off.
func (s *scratch) addr(off int) uintptr { return uintptr(unsafe.Pointer(&s.b[off])) }

// at views the bytes at off as a *T.
func at[T any](s *scratch, off int) *T {
	if off < 0 || off+int(unsafe.Sizeof(*new(T))) > len(s.b) {
		panic("kerndat: scratch overflow")
	}
	return (*T)(unsafe.Pointer(&s.b[off]))
}
