package files

import (
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"
)

// How many files stasis keeps open at once during a restore. A tree may
// hold more open files than stasis may (its RLIMIT_NOFILE, which root
// cannot raise without CAP_SYS_RESOURCE): once a file has been put at its
// fd number in a task, that task holds the open file description, and
// stasis can close its own copy. When a later step needs the file again
// (another task's fd of the same file id, an epoll target, a lock), it is
// taken back from that task with pidfd_getfd: the same description, so
// its offset and flags stay shared, as a fresh open would not.
//
// Only the kinds whose Open hands stasis a file no kind state keeps are
// closed early (a pipe end, a pty master, a memfd stay with their kind
// until the restore ends).

// fdBudgetMax and fdBudgetMin bound how many passed files stasis keeps:
// a quarter of its fd limit, leaving the rest to kind state, mappings,
// images and the runtime.
const (
	fdBudgetMin = 16
	fdBudgetMax = 4096
)

// evictable are the types whose Open returns a file only the Restorer
// holds.
var evictable = map[fdinfo.FdTypes]bool{
	fdinfo.FdTypes_REG:      true,
	fdinfo.FdTypes_EVENTFD:  true,
	fdinfo.FdTypes_SIGNALFD: true,
	fdinfo.FdTypes_TIMERFD:  true,
	fdinfo.FdTypes_INETSK:   true,
	fdinfo.FdTypes_UNIXSK:   true,
}

// fdHome is where a copy of a file lives once passed: a task (by the pid
// stasis sees) and the fd number it has there.
type fdHome struct{ pid, fd int }

// fdBudget returns how many passed files stasis keeps open, from its
// own fd limit.
func fdBudget() int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return fdBudgetMin
	}
	return int(min(max(rl.Cur/4, fdBudgetMin), fdBudgetMax))
}

// placed records that the file with the given id is at fd in the task
// stasis sees as pid, and closes stasis' copies of passed files beyond
// the budget. It is called between steps only, when no caller holds a
// file Open returned.
func (r *Restorer) placed(pid int, id uint32, fd int) {
	if _, ok := r.homes[id]; !ok {
		r.homes[id] = fdHome{pid: pid, fd: fd}
	}
	r.keep(id)
	for len(r.lru) > r.budget {
		old := r.lru[0]
		r.lru = r.lru[1:]
		delete(r.inLRU, old)
		if f, ok := r.open[old]; ok {
			f.Close()
			delete(r.open, old)
		}
	}
}

// keep queues an open, passed file of an evictable kind for closing.
func (r *Restorer) keep(id uint32) {
	if _, ok := r.open[id]; !ok || r.inLRU[id] || !evictable[r.Files[id].GetType()] {
		return
	}
	if _, ok := r.homes[id]; !ok {
		return
	}
	r.inLRU[id] = true
	r.lru = append(r.lru, id)
}

// fromHome takes the file with the given id back from the task that
// holds it, if stasis closed its own copy.
func (r *Restorer) fromHome(id uint32) (*os.File, bool, error) {
	h, ok := r.homes[id]
	if !ok {
		return nil, false, nil
	}
	pidfd, err := unix.PidfdOpen(h.pid, 0)
	if err != nil {
		return nil, true, fmt.Errorf("file id %d: take it back from pid %d fd %d: %w", id, h.pid, h.fd, os.NewSyscallError("pidfd_open", err))
	}
	defer unix.Close(pidfd)
	fd, err := unix.PidfdGetfd(pidfd, h.fd, 0)
	if err != nil {
		return nil, true, fmt.Errorf("file id %d: take it back from pid %d fd %d: %w", id, h.pid, h.fd, os.NewSyscallError("pidfd_getfd", err))
	}
	// Wrapped blocking (see NewAnonFile), then given its flags back: the
	// description is the task's too.
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		unix.Close(fd)
		return nil, true, fmt.Errorf("file id %d: %w", id, os.NewSyscallError("fcntl F_GETFL", err))
	}
	if err := AnonSetfl(fd, uint32(fl)&^unix.O_NONBLOCK); err != nil {
		unix.Close(fd)
		return nil, true, fmt.Errorf("file id %d: %w", id, err)
	}
	f := NewAnonFile(fd, fmt.Sprintf("file id %d", id))
	if err := AnonSetfl(fd, uint32(fl)); err != nil {
		f.Close()
		return nil, true, fmt.Errorf("file id %d: %w", id, err)
	}
	return f, true, nil
}
