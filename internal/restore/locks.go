package restore

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/images"
)

// restoreLocks gives the process back the file locks it held
// (-l/--file-locks), once its fds are at their numbers. A POSIX lock
// belongs to the process that took it, so the task takes it itself with
// an injected fcntl(F_SETLK); it must come after every close the restore
// injects in the task, as closing any fd of a file drops the process's
// POSIX locks on it. flock and OFD locks belong to the open file
// description, which stasis takes on its own copy (files.Restorer.LockFile).
func (tr *taskRestorer) restoreLocks() error {
	locks, err := tr.r.files.LocksOf(tr.img.pid())
	if err != nil {
		return err
	}
	for _, l := range locks {
		id, ok := tr.fileOfFd(l.GetFd())
		if !ok {
			return fmt.Errorf("%s of pid %d: the process has no fd %d: %w", files.DescribeLock(l), l.GetPid(), l.GetFd(), images.ErrCorrupt)
		}
		if !files.IsPosixLock(l) {
			if err := tr.r.files.LockFile(id, l); err != nil {
				return err
			}
			continue
		}
		a, err := tr.s.Put(0, files.PosixLockArg(l))
		if err != nil {
			return err
		}
		_, err = tr.t.Call("fcntl(F_SETLK)", unix.SYS_FCNTL, uint64(l.GetFd()), unix.F_SETLK, a)
		if err := files.LockError(l, tr.r.imgs.files[id], err); err != nil {
			return err
		}
	}
	return nil
}

// fileOfFd returns the file id of fd in the process's fd table.
func (tr *taskRestorer) fileOfFd(fd int32) (uint32, bool) {
	for _, fe := range tr.img.fds {
		if int32(fe.GetFd()) == fd {
			return fe.GetId(), true
		}
	}
	return 0, false
}
