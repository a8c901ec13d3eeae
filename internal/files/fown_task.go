package files

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/remote"
)

// RestoreOwners gives the open files of task t (fds, its fd table) their
// owner (F_SETOWN_EX) and signal (F_SETSIG) back, as criu's
// restore_fown. The task sets them itself: the owner's pid is a number
// of the task's pid namespace. It runs before RestoreLocks, because
// taking a lease makes the taker the owner only of a file that has none
// yet: the dumped owner stays. The owner's uid and euid become the
// task's, still root here, which may signal anyone (sigio_perm).
func (r *Restorer) RestoreOwners(t remote.Task, fds []*fdinfo.FdinfoEntry) error {
	done := map[uint32]bool{}
	for _, fd := range fds {
		id := fd.GetId()
		if !done[id] {
			if err := restoreMqNotify(t, fd.GetFd(), r.Files[id]); err != nil {
				return err
			}
		}
		o, ok := ownerOf(r.Files[id])
		if !ok || done[id] {
			continue
		}
		done[id] = true
		if err := o.check(); err != nil {
			return fmt.Errorf("fd %d: %w: %w", fd.GetFd(), err, images.ErrCorrupt)
		}
		if o.Signum != 0 {
			if _, err := t.Call("fcntl(F_SETSIG)", unix.SYS_FCNTL, uint64(fd.GetFd()), unix.F_SETSIG, uint64(o.Signum)); err != nil {
				return fmt.Errorf("fd %d: signal %d: %w", fd.GetFd(), o.Signum, err)
			}
		}
		if o.Pid != 0 {
			a, err := t.Put(0, o.ownerExArg())
			if err != nil {
				return err
			}
			if _, err := t.Call("fcntl(F_SETOWN_EX)", unix.SYS_FCNTL, uint64(fd.GetFd()), unix.F_SETOWN_EX, a); err != nil {
				return fmt.Errorf("fd %d: owner %d (type %d): %w", fd.GetFd(), o.Pid, o.Type, err)
			}
		}
		if o.Async {
			fl, err := t.Call("fcntl(F_GETFL)", unix.SYS_FCNTL, uint64(fd.GetFd()), unix.F_GETFL)
			if err == nil {
				_, err = t.Call("fcntl(F_SETFL, O_ASYNC)", unix.SYS_FCNTL, uint64(fd.GetFd()), unix.F_SETFL, fl|unix.O_ASYNC)
			}
			if err != nil {
				return fmt.Errorf("fd %d: O_ASYNC: %w", fd.GetFd(), err)
			}
		}
	}
	return nil
}
