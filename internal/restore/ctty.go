package restore

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/signal"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/files"
)

// Controlling terminals. A session gets its terminal back from its
// leader, which alone may take it (TIOCSCTTY, after setsid, which created
// it without one), and then gives the foreground to the group that had
// it (TIOCSPGRP): a shell's job control depends on both. With -j the tree
// lives in the session of stasis restore, whose terminal stasis hands to
// the group that was in the foreground, with the termios it had.

// cttys returns the controlling terminals of the images' sessions,
// read once.
func (r *restorer) cttys() ([]files.Ctty, error) {
	if r.cttyList == nil {
		l, err := r.files.Cttys()
		if err != nil {
			return nil, err
		}
		r.cttyList = append(l, files.Ctty{}) // never nil again; the last is a stop
	}
	return r.cttyList[:len(r.cttyList)-1], nil
}

// joinsOwnSession tells whether the session sid of the images is joined
// to the session of stasis restore instead of being started again: with
// -j, a shell that led the session of the terminal it ran on (a terminal
// window's shell, dumped with its jobs) cannot lead a session on the
// terminal of stasis restore, which belongs to stasis' session; it comes
// back as a job of that session, leading its own process group, with its
// jobs' groups beside it, and the group that had the foreground gets it.
func (r *restorer) joinsOwnSession(sid int) (bool, error) {
	if !r.opts.ShellJob {
		return false, nil
	}
	cs, err := r.cttys()
	if err != nil {
		return false, err
	}
	for _, c := range cs {
		if c.Own && c.Sid == sid {
			return true, nil
		}
	}
	return false, nil
}

// takeCtty makes the session the task has just started (setsid) take its
// terminal, before any child is cloned from it: a process has a
// controlling terminal only if it took it or was forked from one that had.
func (tr *taskRestorer) takeCtty() error {
	cs, err := tr.r.cttys()
	if err != nil {
		return err
	}
	for _, c := range cs {
		if c.Own || c.Sid != tr.img.pid() {
			continue
		}
		if err := tr.cttyIoctl(c, unix.TIOCSCTTY, 0); err != nil {
			return fmt.Errorf("%s as the controlling terminal of session %d: %w", c.Name, c.Sid, err)
		}
	}
	return nil
}

// restoreCttys gives each terminal its foreground group, once every
// process group exists and before any fd is given (each task still has
// its channel to stasis).
func (r *restorer) restoreCttys() error {
	cs, err := r.cttys()
	if err != nil {
		return err
	}
	for _, c := range cs {
		if c.Own {
			if err := r.foregroundOwnTerminal(c); err != nil {
				return err
			}
			continue
		}
		leader := r.procByPid(c.Sid)
		if leader == nil {
			r.log.Warn("terminal restored without its session: the session leader is not in the images", "tty", c.Name, "sid", c.Sid)
			continue
		}
		if c.Pgrp <= 0 || c.Pgrp == c.Sid {
			continue
		}
		a, err := leader.s.Put(0, binary.NativeEndian.AppendUint32(nil, uint32(c.Pgrp)))
		if err != nil {
			return err
		}
		if err := leader.cttyIoctl(c, unix.TIOCSPGRP, a); err != nil {
			return fmt.Errorf("%s: foreground group %d of session %d: %w", c.Name, c.Pgrp, c.Sid, err)
		}
	}
	return nil
}

// cttyIoctl makes an ioctl on terminal c from inside the task, through a
// copy of stasis' file of it.
func (tr *taskRestorer) cttyIoctl(c files.Ctty, req, arg uint64) error {
	fd, err := tr.t.Call("pidfd_getfd", unix.SYS_PIDFD_GETFD, uint64(tr.r.channelFd), uint64(c.File.Fd()), 0)
	if err != nil {
		return err
	}
	if _, err := tr.t.Call(fmt.Sprintf("ioctl(%#x)", req), unix.SYS_IOCTL, fd, req, arg); err != nil {
		tr.t.Call("close", unix.SYS_CLOSE, fd)
		return err
	}
	_, err = tr.t.Call("close", unix.SYS_CLOSE, fd)
	return err
}

// foregroundOwnTerminal gives stasis' terminal (-j) the termios the
// tree's terminal had and its foreground group, if that group is in the
// tree: the job that was in the foreground (an editor, the shell) reads
// the keyboard again. A failed restore takes both back.
func (r *restorer) foregroundOwnTerminal(c files.Ctty) error {
	fd := int(c.File.Fd())
	if !r.groupInTree(c.Pgrp) {
		return nil
	}
	oldTio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("-j: termios of %s: %w", c.File.Name(), err)
	}
	oldFg, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	if err != nil {
		// Not stasis' controlling terminal: its fds just point to it.
		r.log.Warn("-j: the terminal of stasis is not its controlling terminal: the foreground is left alone", "tty", c.File.Name(), "err", err)
		return nil
	}
	tio, err := r.files.ShellJobTermios(c)
	if err != nil {
		return err
	}
	if tio != nil {
		if err := unix.IoctlSetTermios(fd, unix.TCSETS, tio); err != nil {
			return fmt.Errorf("-j: set termios of %s: %w", c.File.Name(), err)
		}
	}
	r.undoTerminal = func() {
		// stasis is no longer in the foreground: without ignoring
		// SIGTTOU, taking the terminal back would stop it.
		signal.Ignore(unix.SIGTTOU)
		defer signal.Reset(unix.SIGTTOU)
		_ = unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, oldFg)
		_ = unix.IoctlSetTermios(fd, unix.TCSETS, oldTio)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, c.Pgrp); err != nil {
		return fmt.Errorf("-j: give %s to group %d: %w", c.File.Name(), c.Pgrp, os.NewSyscallError("ioctl TIOCSPGRP", err))
	}
	r.winchGroup = c.Pgrp
	return nil
}

// redrawForeground sends SIGWINCH to the foreground group of a shell
// job once it runs: the terminal it now has may not have its old size,
// and full-screen programs redraw on it.
func (r *restorer) redrawForeground() {
	if r.winchGroup > 0 {
		_ = unix.Kill(-r.winchGroup, unix.SIGWINCH)
	}
}

func (r *restorer) groupInTree(pgid int) bool {
	for _, tr := range r.procs {
		if tr.img.pgid() == pgid && !tr.img.zombie {
			return true
		}
	}
	return false
}

func (r *restorer) procByPid(pid int) *taskRestorer {
	for _, tr := range r.procs {
		if tr.img.pid() == pid {
			return tr
		}
	}
	return nil
}

// openCtty opens /dev/tty as a task of session sid, which has the
// session's terminal by now (files.Restorer.OpenCtty), and takes the file
// into stasis.
func (r *restorer) openCtty(sid, flags int) (*os.File, error) {
	var tr *taskRestorer
	for _, p := range r.procs {
		if p.img.sid() == sid && p.img.live() {
			tr = p
			break
		}
	}
	if tr == nil {
		return nil, fmt.Errorf("/dev/tty of session %d: no process of the session is restored", sid)
	}
	fd, err := tr.t.Open(tr.s, "/dev/tty", flags|unix.O_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("open /dev/tty in pid %d (session %d): %w", tr.t.Tid, sid, err)
	}
	nfd, err := (&files.Fd{Pid: tr.t.Tid, Num: int(fd)}).Dup()
	if _, cerr := tr.t.Call("close", unix.SYS_CLOSE, fd); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(nfd), "/dev/tty"), nil
}
