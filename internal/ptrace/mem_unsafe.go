package ptrace

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
)

// ReadMem copies len(buf) bytes at addr of process pid into buf. It uses
// process_vm_readv, which needs no stop and no injection, and falls back to
// /proc/PID/mem (which also reads PROT_NONE and unreadable pages).
func ReadMem(pid int, addr uint64, buf []byte) error {
	if len(buf) == 0 {
		return nil
	}
	local := []unix.Iovec{{Base: &buf[0]}}
	local[0].SetLen(len(buf))
	remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(buf)}}
	n, err := unix.ProcessVMReadv(pid, local, remote, 0)
	if err == nil && n == len(buf) {
		return nil
	}
	return procMemIO(pid, addr, buf, false)
}

// WriteMem writes buf at addr of process pid. process_vm_writev does not
// use FOLL_FORCE, so read-only mappings are written through /proc/PID/mem.
func WriteMem(pid int, addr uint64, buf []byte) error {
	if len(buf) == 0 {
		return nil
	}
	local := []unix.Iovec{{Base: &buf[0]}}
	local[0].SetLen(len(buf))
	remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(buf)}}
	n, err := unix.ProcessVMWritev(pid, local, remote, 0)
	if err == nil && n == len(buf) {
		return nil
	}
	return procMemIO(pid, addr, buf, true)
}

func procMemIO(pid int, addr uint64, buf []byte, write bool) error {
	flag := os.O_RDONLY
	if write {
		flag = os.O_RDWR
	}
	f, err := linux.OpenFile("/proc/"+strconv.Itoa(pid)+"/mem", flag, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return memFileIO(f, pid, addr, buf, write)
}

// memFileIO reads or writes buf at addr through f, pid's /proc/PID/mem.
func memFileIO(f *os.File, pid int, addr uint64, buf []byte, write bool) error {
	var n int
	var err error
	if write {
		n, err = f.WriteAt(buf, int64(addr))
	} else {
		n, err = f.ReadAt(buf, int64(addr))
	}
	if err != nil {
		return fmt.Errorf("access %#x+%d of pid %d: %w", addr, len(buf), pid, err)
	}
	if n != len(buf) {
		return fmt.Errorf("access %#x+%d of pid %d: short transfer %d", addr, len(buf), pid, n)
	}
	return nil
}

// VMIO is one contiguous remote range backed by a local buffer.
type VMIO struct {
	Remote uint64
	Local  []byte
	// NoPin reads through /proc/PID/mem instead of process_vm_readv. The
	// latter pins pages (FOLL_PIN), and the kernel unshares - copies - an
	// anonymous page still shared copy-on-write with another process
	// before pinning it: a dump or compare would duplicate the memory of
	// a forked tree.
	NoPin bool
}

// ReadMemNoPin reads like ReadMem without pinning (see VMIO.NoPin).
func ReadMemNoPin(pid int, addr uint64, buf []byte) error {
	return procMemIO(pid, addr, buf, false)
}

// ReadvMem reads many ranges with as few process_vm_readv calls as
// possible (IOV_MAX per call on each side).
func ReadvMem(pid int, ios []VMIO) error { return vmIO(pid, ios, false) }

// WritevMem writes many ranges with process_vm_writev.
func WritevMem(pid int, ios []VMIO) error { return vmIO(pid, ios, true) }

const iovMax = 1024

func vmIO(pid int, ios []VMIO, write bool) error {
	if !write {
		pinned := ios[:0:0]
		var mem *os.File // opened once for all the ranges not pinned
		defer func() {
			if mem != nil {
				mem.Close()
			}
		}()
		for _, io := range ios {
			if !io.NoPin {
				pinned = append(pinned, io)
				continue
			}
			if mem == nil {
				var err error
				if mem, err = linux.OpenFile("/proc/"+strconv.Itoa(pid)+"/mem", os.O_RDONLY, 0); err != nil {
					return err
				}
			}
			if err := memFileIO(mem, pid, io.Remote, io.Local, false); err != nil {
				return err
			}
		}
		ios = pinned
	}
	for len(ios) > 0 {
		n := min(len(ios), iovMax)
		batch := ios[:n]
		ios = ios[n:]
		local := make([]unix.Iovec, 0, n)
		remote := make([]unix.RemoteIovec, 0, n)
		total := 0
		for _, io := range batch {
			if len(io.Local) == 0 {
				continue
			}
			v := unix.Iovec{Base: &io.Local[0]}
			v.SetLen(len(io.Local))
			local = append(local, v)
			remote = append(remote, unix.RemoteIovec{Base: uintptr(io.Remote), Len: len(io.Local)})
			total += len(io.Local)
		}
		var done int
		var err error
		if write {
			done, err = unix.ProcessVMWritev(pid, local, remote, 0)
		} else {
			done, err = unix.ProcessVMReadv(pid, local, remote, 0)
		}
		if err == nil && done == total {
			continue
		}
		// A partial transfer stops at the first range that failed (e.g.
		// PROT_NONE or read-only for writes); redo range by range via
		// /proc/PID/mem so that the error names the range.
		for _, io := range batch {
			var err error
			if write {
				err = WriteMem(pid, io.Remote, io.Local)
			} else {
				err = ReadMem(pid, io.Remote, io.Local)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}
