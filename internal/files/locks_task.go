package files

import (
	"errors"
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	filelock "github.com/checkpoint-restore/go-criu/v8/crit/images/file-lock"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/remote"
)

// RestoreLocks gives the process t back the file locks it held
// (-l/--file-locks), once its fds (fds, its fd table) are at their
// numbers. A POSIX lock belongs to the process that took it, so the task
// takes it itself with an injected fcntl(F_SETLK); it must come after
// every close the restore injects in the task, as closing any fd of a
// file drops the process's POSIX locks on it. flock and OFD locks belong
// to the open file description: an OFD lock stasis takes on its own copy
// (lockFile), a flock the task takes, as the kernel shows its taker's pid.
// A lease belongs to the open file description as well, but
// the task takes it (restoreLease).
func (r *Restorer) RestoreLocks(t remote.Task, fds []*fdinfo.FdinfoEntry) error {
	locks, err := r.locksOf(t.Pid())
	if err != nil {
		return err
	}
	for _, l := range locks {
		id, ok := fileOfFd(fds, l.GetFd())
		if !ok {
			return fmt.Errorf("%s of pid %d: the process has no fd %d: %w", describeEntry(l), l.GetPid(), l.GetFd(), images.ErrCorrupt)
		}
		if isLease(l) {
			if err := r.restoreLease(t, id, l); err != nil {
				return err
			}
			continue
		}
		if l.GetFlag() == flFlock {
			// The lock is the description's, but /proc/locks and
			// fdinfo name the pid that took it: the task takes it.
			how := uint64(unix.LOCK_SH)
			if l.GetType() == unix.F_WRLCK {
				how = unix.LOCK_EX
			}
			_, err := t.Call("flock", unix.SYS_FLOCK, uint64(l.GetFd()), how|unix.LOCK_NB)
			if err := lockError(l, r.Files[id], err); err != nil {
				return err
			}
			continue
		}
		if !isPosixLock(l) {
			if err := r.lockFile(id, l); err != nil {
				return err
			}
			continue
		}
		a, err := t.Put(0, posixLockArg(l))
		if err != nil {
			return err
		}
		_, err = t.Call("fcntl(F_SETLK)", unix.SYS_FCNTL, uint64(l.GetFd()), unix.F_SETLK, a)
		if err := lockError(l, r.Files[id], err); err != nil {
			return err
		}
	}
	return nil
}

// fileOfFd returns the file id of fd in the process's fd table.
func fileOfFd(fds []*fdinfo.FdinfoEntry, fd int32) (uint32, bool) {
	for _, fe := range fds {
		if int32(fe.GetFd()) == fd {
			return fe.GetId(), true
		}
	}
	return 0, false
}

// restoreLease has the task take its lease with an injected
// fcntl(F_SETLEASE), not stasis: the kernel makes the taker the file's
// owner unless it has one (RestoreOwners gave it the dumped one first)
// and registers the taker's fd number for the break signal (its si_fd),
// so a lease taken by stasis would signal stasis's fd of a process gone.
// The task is still root here (credentials come last), which has
// CAP_LEASE: a task of another uid takes back a lease on a file it does
// not own, as criu's setfsuid(st_uid) around the call allows.
//
// A lease that was being broken is taken as it was before the break,
// then broken again by stasis (breakLease). That break signals the owner
// again; the task had the first signal pending or handled at the dump,
// and the signal images give it back. So the new one is taken out of the
// task's queue at once, while every signal of the task is still blocked
// and before the task state phase queues the dumped ones: the holder
// sees exactly the signals it had.
func (r *Restorer) restoreLease(t remote.Task, id uint32, l *filelock.FileLockEntry) error {
	typ := r.leaseType(id, l)
	_, err := t.Call("fcntl(F_SETLEASE)", unix.SYS_FCNTL, uint64(l.GetFd()), unix.F_SETLEASE, uint64(typ))
	if err := lockError(l, r.Files[id], err); err != nil {
		return err
	}
	if !isBreakingLease(l) {
		return nil
	}
	sig, err := r.breakLease(id, l)
	if err != nil {
		return err
	}
	return r.discardSignal(t, sig)
}

// discardSignal takes one instance of sig out of the task's pending
// signals, if there is one (rt_sigtimedwait with a zero timeout).
func (r *Restorer) discardSignal(t remote.Task, sig unix.Signal) error {
	set := make([]byte, 8)
	set[(sig-1)/8] = 1 << ((sig - 1) % 8)
	a, err := t.Put(0, append(set, make([]byte, 16)...)) // sigset, then a zero timespec
	if err != nil {
		return err
	}
	_, err = t.Call("rt_sigtimedwait", unix.SYS_RT_SIGTIMEDWAIT, a, 0, a+8, 8)
	if errors.Is(err, unix.EAGAIN) {
		// The owner is another task, or the signal could not be queued.
		r.Log().Debug("no lease break signal to discard", "pid", t.HostPid(), "signal", sig)
		return nil
	}
	return err
}
