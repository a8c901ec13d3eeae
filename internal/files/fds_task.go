package files

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/remote"
)

// RestoreFS sets the root, cwd and umask of task t to fsE's (fs-N.img),
// passing it the directories it enters.
func (r *Restorer) RestoreFS(t remote.Task, fsE *fs.FsEntry) error {
	if root := r.Files[fsE.GetRootId()].GetReg().GetName(); root != "/" {
		fd, err := r.pass(t, fsE.GetRootId())
		if err != nil {
			return err
		}
		if _, err := t.Call("fchdir", unix.SYS_FCHDIR, fd); err != nil {
			return fmt.Errorf("root %s: %w", root, err)
		}
		dot, err := t.Put(0, []byte(".\x00"))
		if err != nil {
			return err
		}
		if _, err := t.Call("chroot", unix.SYS_CHROOT, dot); err != nil {
			return fmt.Errorf("root %s: %w", root, err)
		}
		if _, err := t.Call("close", unix.SYS_CLOSE, fd); err != nil {
			return err
		}
	}
	fd, err := r.pass(t, fsE.GetCwdId())
	if err != nil {
		return fmt.Errorf("cwd: %w", err)
	}
	if _, err := t.Call("fchdir", unix.SYS_FCHDIR, fd); err != nil {
		return fmt.Errorf("cwd %s: %w", r.Files[fsE.GetCwdId()].GetReg().GetName(), err)
	}
	if _, err := t.Call("close", unix.SYS_CLOSE, fd); err != nil {
		return err
	}
	_, err = t.Call("umask", unix.SYS_UMASK, uint64(fsE.GetUmask()))
	return err
}

// RestoreFds puts every fd of task t's fd table (fds, fdinfo-N.img) at its
// number, then the epoll items that name them. Fds with the same
// file id share one open file description (and so its offset).
func (r *Restorer) RestoreFds(t remote.Task, fds []*fdinfo.FdinfoEntry) error {
	for _, fe := range fds {
		tmp, err := r.pass(t, fe.GetId())
		if err != nil {
			return fmt.Errorf("fd %d: %w", fe.GetFd(), err)
		}
		target := uint64(fe.GetFd())
		cloexec := fe.GetFlags()&unix.FD_CLOEXEC != 0
		if tmp == target {
			// pidfd_getfd sets close-on-exec; dup3(fd, fd) is EINVAL.
			if !cloexec {
				if _, err := t.Call("fcntl(F_SETFD)", unix.SYS_FCNTL, tmp, unix.F_SETFD, 0); err != nil {
					return err
				}
			}
			r.placed(t.HostPid(), fe.GetId(), int(target))
			continue
		}
		var flags uint64
		if cloexec {
			flags = unix.O_CLOEXEC
		}
		if _, err := t.Call("dup3", unix.SYS_DUP3, tmp, target, flags); err != nil {
			return fmt.Errorf("fd %d: %w", target, err)
		}
		if _, err := t.Call("close", unix.SYS_CLOSE, tmp); err != nil {
			return err
		}
		r.placed(t.HostPid(), fe.GetId(), int(target))
	}
	return r.RestoreEpollTargets(t, fds)
}

// pass puts a copy of the file with the given id into task t and returns
// its fd number there (the lowest free one, close-on-exec).
func (r *Restorer) pass(t remote.Task, id uint32) (uint64, error) {
	f, err := r.Open(id)
	if err != nil {
		return 0, err
	}
	fd, err := t.PassFile(f)
	return uint64(fd), err
}
