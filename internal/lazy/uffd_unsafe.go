package lazy

import (
	"encoding/binary"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
)

// userfaultfd ioctls and messages of a lazy restore
// (include/uapi/linux/userfaultfd.h).
const (
	uffdioRegister   = 0xC020AA00 // _IOWR(UFFDIO, 0x00, struct uffdio_register)
	uffdioUnregister = 0x8010AA01 // _IOR(UFFDIO, 0x01, struct uffdio_range)
	uffdioWake       = 0x8010AA02 // _IOR(UFFDIO, 0x02, struct uffdio_range)
	uffdioCopy       = 0xC028AA03 // _IOWR(UFFDIO, 0x03, struct uffdio_copy)
	uffdioZeropage   = 0xC020AA04 // _IOWR(UFFDIO, 0x04, struct uffdio_zeropage)
	uffdioPoison     = 0xC020AA08 // _IOWR(UFFDIO, 0x08, struct uffdio_poison), Linux 6.6

	registerModeMissing = 1 // UFFDIO_REGISTER_MODE_MISSING

	featurePoison = 1 << 14 // UFFD_FEATURE_POISON

	// The ioctls a range registered for missing pages must offer
	// (1 << _UFFDIO_WAKE | 1 << _UFFDIO_COPY | 1 << _UFFDIO_ZEROPAGE).
	neededIoctls = 1<<2 | 1<<3 | 1<<4

	eventPagefault = 0x12 // UFFD_EVENT_PAGEFAULT
	eventFork      = 0x13 // UFFD_EVENT_FORK
	eventRemap     = 0x14 // UFFD_EVENT_REMAP
	eventRemove    = 0x15 // UFFD_EVENT_REMOVE
	eventUnmap     = 0x16 // UFFD_EVENT_UNMAP

	msgSize = 32 // struct uffd_msg
)

// Features are the non-cooperative events a lazy restore asks for (criu's
// NEED_UFFD_API_FEATURES): the daemon must follow a task that forks,
// moves or drops memory whose pages are still missing.
const Features = linux.UffdFeatureEventFork | linux.UffdFeatureEventRemap | linux.UffdFeatureEventUnmap | linux.UffdFeatureEventRemove

func ioctl(f *os.File, req uintptr, arg unsafe.Pointer) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), req, uintptr(arg))
	if e != 0 {
		return e
	}
	return nil
}

// api enables features on a fresh userfaultfd (UFFDIO_API, once).
func api(f *os.File, features uint64) error {
	arg := linux.UffdioAPIArg{API: linux.UffdAPI, Features: features}
	return ioctl(f, linux.UffdioAPI, unsafe.Pointer(&arg))
}

// registerMissing registers [start, end) of the uffd's mm for missing
// pages and returns the ioctls the range offers.
func registerMissing(f *os.File, start, end uint64) (uint64, error) {
	arg := struct{ Start, Len, Mode, Ioctls uint64 }{start, end - start, registerModeMissing, 0}
	err := ioctl(f, uffdioRegister, unsafe.Pointer(&arg))
	return arg.Ioctls, err
}

func unregister(f *os.File, start, end uint64) error {
	arg := struct{ Start, Len uint64 }{start, end - start}
	return ioctl(f, uffdioUnregister, unsafe.Pointer(&arg))
}

func wake(f *os.File, start, end uint64) error {
	arg := struct{ Start, Len uint64 }{start, end - start}
	return ioctl(f, uffdioWake, unsafe.Pointer(&arg))
}

// copyPages puts data at dst in the uffd's mm (UFFDIO_COPY) and wakes the
// threads waiting there. It returns the bytes copied, which may be fewer
// than asked with an error (EEXIST: a page was there already; EAGAIN:
// the mapping changed meanwhile).
func copyPages(f *os.File, dst uint64, data []byte) (int64, error) {
	arg := struct {
		Dst, Src, Len, Mode uint64
		Copy                int64
	}{dst, uint64(uintptr(unsafe.Pointer(&data[0]))), uint64(len(data)), 0, 0}
	err := ioctl(f, uffdioCopy, unsafe.Pointer(&arg))
	if arg.Copy > 0 {
		return arg.Copy, err
	}
	return 0, err
}

// zeroPages maps the zero page at [start, end).
func zeroPages(f *os.File, start, end uint64) error {
	arg := struct {
		Start, Len, Mode uint64
		Zeropage         int64
	}{start, end - start, 0, 0}
	return ioctl(f, uffdioZeropage, unsafe.Pointer(&arg))
}

// poison makes every access to [start, end) raise SIGBUS.
func poison(f *os.File, start, end uint64) error {
	arg := struct {
		Start, Len, Mode uint64
		Updated          int64
	}{start, end - start, 0, 0}
	return ioctl(f, uffdioPoison, unsafe.Pointer(&arg))
}

// msg is the part of struct uffd_msg the daemon uses.
type msg struct {
	event uint8
	// pagefault: a = address; fork: a = the child's new uffd; remap:
	// a = from, b = to, c = len; remove and unmap: a = start, b = end.
	a, b, c uint64
}

// readMsgs reads the pending messages of a non-blocking uffd.
func readMsgs(f *os.File, buf []byte) ([]msg, error) {
	n, err := unix.Read(int(f.Fd()), buf)
	if err != nil {
		if err == unix.EAGAIN {
			return nil, nil
		}
		return nil, err
	}
	var out []msg
	for off := 0; off+msgSize <= n; off += msgSize {
		b := buf[off : off+msgSize]
		m := msg{event: b[0]}
		arg := b[8:]
		switch m.event {
		case eventPagefault:
			m.a = binary.LittleEndian.Uint64(arg[8:])
		case eventFork:
			m.a = uint64(binary.LittleEndian.Uint32(arg[0:]))
		case eventRemap:
			m.a, m.b, m.c = binary.LittleEndian.Uint64(arg[0:]), binary.LittleEndian.Uint64(arg[8:]), binary.LittleEndian.Uint64(arg[16:])
		case eventRemove, eventUnmap:
			m.a, m.b = binary.LittleEndian.Uint64(arg[0:]), binary.LittleEndian.Uint64(arg[8:])
		}
		out = append(out, m)
	}
	return out, nil
}
