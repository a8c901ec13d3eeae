package linux

import (
	"fmt"
	"os"
	"sort"

	"golang.org/x/sys/unix"
)

// kcmp types (include/uapi/linux/kcmp.h).
const (
	KcmpFile     = 0 // KCMP_FILE
	KcmpVM       = 1 // KCMP_VM
	KcmpFiles    = 2 // KCMP_FILES
	KcmpFS       = 3 // KCMP_FS
	KcmpSighand  = 4 // KCMP_SIGHAND
	KcmpEpollTfd = 7 // KCMP_EPOLL_TFD
)

// kcmp is the one kcmp(2) call of stasis. idx2 is an address for
// KCMP_EPOLL_TFD (see KcmpEpollTarget).
func kcmp(pid1, pid2, typ int, idx1, idx2 uintptr) (uintptr, error) {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), uintptr(typ), idx1, idx2, 0)
	if e != 0 {
		return 0, os.NewSyscallError("kcmp", e)
	}
	return r, nil
}

// KcmpOrder compares two kernel objects of kind typ (for KcmpFile, the open
// file descriptions of fd idx1 of pid1 and fd idx2 of pid2): 0 if they are
// one, else -1 or 1 in an order that is arbitrary (the kernel obfuscates
// the pointers it compares) but total and stable, so that objects can be
// kept sorted.
func KcmpOrder(pid1, pid2, typ, idx1, idx2 int) (int, error) {
	r, err := kcmp(pid1, pid2, typ, uintptr(idx1), uintptr(idx2))
	if err != nil {
		return 0, err
	}
	switch r {
	case 0:
		return 0, nil
	case 1:
		return -1, nil
	case 2:
		return 1, nil
	}
	return 0, fmt.Errorf("kcmp: objects of different kinds (%d)", r)
}

// KcmpSet is a set of kernel objects of one kind, each named by a process
// and an index and carrying a value, kept in kcmp's order: finding whether
// an object is in it takes O(log n) kcmp calls (criu's kid_tree), where
// comparing with every member would take n² for a tree with thousands of
// fds of one file, or thousands of processes.
type KcmpSet[T any] struct {
	Type  int
	items []kcmpItem[T]
}

type kcmpItem[T any] struct {
	pid, idx int
	v        T
}

// Find returns the value of the object (pid, idx) if it is in the set, and
// otherwise the position where Insert puts it.
func (s *KcmpSet[T]) Find(pid, idx int) (v T, at int, found bool, err error) {
	equal := -1
	at = sort.Search(len(s.items), func(i int) bool {
		c, e := KcmpOrder(pid, s.items[i].pid, s.Type, idx, s.items[i].idx)
		if e != nil {
			err = e
			return true
		}
		if c == 0 {
			equal = i
		}
		return c <= 0
	})
	if err != nil {
		return v, 0, false, err
	}
	// The index sort.Search returns, if in range, is one it compared.
	if at < len(s.items) && equal == at {
		return s.items[at].v, at, true, nil
	}
	return v, at, false, nil
}

// Insert adds the object (pid, idx) with value v at the position Find gave.
func (s *KcmpSet[T]) Insert(at, pid, idx int, v T) {
	s.items = append(s.items, kcmpItem[T]{})
	copy(s.items[at+1:], s.items[at:])
	s.items[at] = kcmpItem[T]{pid: pid, idx: idx, v: v}
}

// Values are the values of the set's objects, in its order.
func (s *KcmpSet[T]) Values() []T {
	out := make([]T, len(s.items))
	for i, it := range s.items {
		out[i] = it.v
	}
	return out
}
