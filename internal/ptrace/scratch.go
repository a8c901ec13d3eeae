package ptrace

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Scratch is a private anonymous mapping stasis creates inside a task to
// pass pointer arguments to injected calls.
type Scratch struct {
	Pid  int
	Addr uint64
	Size uint64
	Exec bool // executable: it can hold SeqCode (MapExecScratch)
}

// MapScratch injects an mmap of size bytes into t. With addr != 0 the
// mapping must land exactly there (MAP_FIXED_NOREPLACE) and is executable,
// so that it can also hold the syscall instruction stasis injects through.
func MapScratch(t *Task, addr, size uint64) (*Scratch, error) {
	prot := uint64(unix.PROT_READ | unix.PROT_WRITE)
	flags := uint64(unix.MAP_PRIVATE | unix.MAP_ANONYMOUS)
	if addr != 0 {
		prot |= unix.PROT_EXEC
		flags |= unix.MAP_FIXED_NOREPLACE
	}
	r, err := t.Syscall(unix.SYS_MMAP, addr, size, prot, flags, ^uint64(0), 0)
	if err != nil {
		return nil, fmt.Errorf("map scratch memory in pid %d: %w", t.Tid, err)
	}
	if addr != 0 && r != addr {
		return nil, fmt.Errorf("map scratch memory in pid %d: got %#x, want %#x", t.Tid, r, addr)
	}
	return &Scratch{Pid: t.Tid, Addr: r, Size: size}, nil
}

// MapExecScratch is MapScratch at any address, executable too: it holds
// SeqCode besides the arguments (EachSeq).
func MapExecScratch(t *Task, size uint64) (*Scratch, error) {
	r, err := t.Syscall(unix.SYS_MMAP, 0, size, unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		return nil, fmt.Errorf("map scratch memory in pid %d: %w", t.Tid, err)
	}
	return &Scratch{Pid: t.Tid, Addr: r, Size: size, Exec: true}, nil
}

// Put writes b at offset off and returns its address in the task.
func (s *Scratch) Put(off uint64, b []byte) (uint64, error) {
	if off+uint64(len(b)) > s.Size {
		return 0, fmt.Errorf("scratch write of %d bytes at %d overflows %d", len(b), off, s.Size)
	}
	return s.Addr + off, WriteMem(s.Pid, s.Addr+off, b)
}

// Get reads n bytes at offset off.
func (s *Scratch) Get(off uint64, n int) ([]byte, error) {
	if off+uint64(n) > s.Size {
		return nil, fmt.Errorf("scratch read of %d bytes at %d overflows %d", n, off, s.Size)
	}
	b := make([]byte, n)
	return b, ReadMem(s.Pid, s.Addr+off, b)
}

// Unmap removes the scratch mapping.
func (s *Scratch) Unmap(t *Task) error {
	_, err := t.Call("munmap scratch", unix.SYS_MUNMAP, s.Addr, s.Size)
	return err
}
