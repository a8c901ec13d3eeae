package tty

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/signal"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/remote"
)

// Controlling terminals. A session gets its terminal back from its
// leader, which alone may take it (TIOCSCTTY, after setsid, which created
// it without one), and then gives the foreground to the group that had
// it (TIOCSPGRP): a shell's job control depends on both. With -j the tree
// lives in the session of stasis restore, whose terminal stasis hands to
// the group that was in the foreground, with the termios it had.

// Process is one process of the restored tree, as the terminals need it.
type Process struct {
	Task      remote.Task // its leader; Task.Pid is its pid in the images
	Sid, Pgid int         // its session and process group in the images
	Zombie    bool        // it ends as a zombie
	Live      bool        // it runs: neither a zombie nor a helper
}

// cttys returns the controlling terminals of the images' sessions,
// read once.
func cttys(r *files.Restorer) ([]sessionTty, error) {
	s := files.RestoreState(r, "tty", func() *ttyRestore { return &ttyRestore{} })
	if s.cttys == nil {
		l, err := cttysOf(r)
		if err != nil {
			return nil, err
		}
		s.cttys = append(l, sessionTty{}) // never nil again; the last is a stop
	}
	return s.cttys[:len(s.cttys)-1], nil
}

// JoinsOwnSession tells whether the session sid of the images is joined
// to the session of stasis restore instead of being started again: with
// -j, a shell that led the session of the terminal it ran on (a terminal
// window's shell, dumped with its jobs) cannot lead a session on the
// terminal of stasis restore, which belongs to stasis' session; it comes
// back as a job of that session, leading its own process group, with its
// jobs' groups beside it, and the group that had the foreground gets it.
func JoinsOwnSession(r *files.Restorer, sid int) (bool, error) {
	if !r.Opts.ShellJob {
		return false, nil
	}
	cs, err := cttys(r)
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

// TakeCtty makes the session the task t has just started (setsid) take
// its terminal, before any child is cloned from it: a process has a
// controlling terminal only if it took it or was forked from one that had.
func TakeCtty(r *files.Restorer, t remote.Task) error {
	cs, err := cttys(r)
	if err != nil {
		return err
	}
	for _, c := range cs {
		if c.Own || c.Sid != t.Pid() {
			continue
		}
		if err := cttyIoctl(t, c, unix.TIOCSCTTY, 0); err != nil {
			return fmt.Errorf("%s as the controlling terminal of session %d: %w", c.Name, c.Sid, err)
		}
	}
	return nil
}

// RestoreCttys gives each terminal its foreground group, once every
// process group exists and before any fd is given (each task still has
// its channel to stasis). procs are the processes of the tree, parents
// first; a /dev/tty of the images is opened later by one of them.
func RestoreCttys(r *files.Restorer, procs []Process) error {
	files.RestoreState(r, "tty", func() *ttyRestore { return &ttyRestore{} }).procs = procs
	cs, err := cttys(r)
	if err != nil {
		return err
	}
	for _, c := range cs {
		if c.Own {
			if err := foregroundOwnTerminal(r, procs, c); err != nil {
				return err
			}
			continue
		}
		leader := procByPid(procs, c.Sid)
		if leader == nil {
			r.Log().Warn("terminal restored without its session: the session leader is not in the images", "tty", c.Name, "sid", c.Sid)
			continue
		}
		if c.Pgrp <= 0 || c.Pgrp == c.Sid {
			continue
		}
		a, err := leader.Put(0, binary.NativeEndian.AppendUint32(nil, uint32(c.Pgrp)))
		if err != nil {
			return err
		}
		if err := cttyIoctl(leader, c, unix.TIOCSPGRP, a); err != nil {
			return fmt.Errorf("%s: foreground group %d of session %d: %w", c.Name, c.Pgrp, c.Sid, err)
		}
	}
	return nil
}

// cttyIoctl makes an ioctl on terminal c from inside the task, through a
// copy of stasis' file of it.
func cttyIoctl(t remote.Task, c sessionTty, req, arg uint64) error {
	fd, err := t.PassFile(c.File)
	if err != nil {
		return err
	}
	if _, err := t.Call(fmt.Sprintf("ioctl(%#x)", req), unix.SYS_IOCTL, uint64(fd), req, arg); err != nil {
		t.Call("close", unix.SYS_CLOSE, uint64(fd))
		return err
	}
	_, err = t.Call("close", unix.SYS_CLOSE, uint64(fd))
	return err
}

// foregroundOwnTerminal gives stasis' terminal (-j) the termios the
// tree's terminal had and its foreground group, if that group is in the
// tree: the job that was in the foreground (an editor, the shell) reads
// the keyboard again. A failed restore takes both back.
func foregroundOwnTerminal(r *files.Restorer, procs []Process, c sessionTty) error {
	fd := int(c.File.Fd())
	if !groupInTree(procs, c.Pgrp) {
		return nil
	}
	oldTio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("-j: termios of %s: %w", c.File.Name(), err)
	}
	oldFg, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	if err != nil {
		// Not stasis' controlling terminal: its fds just point to it.
		r.Log().Warn("-j: the terminal of stasis is not its controlling terminal: the foreground is left alone", "tty", c.File.Name(), "err", err)
		return nil
	}
	tio, err := shellJobTermios(r, c)
	if err != nil {
		return err
	}
	if tio != nil {
		if err := unix.IoctlSetTermios(fd, unix.TCSETS, tio); err != nil {
			return fmt.Errorf("-j: set termios of %s: %w", c.File.Name(), err)
		}
	}
	r.OnRollback(func() error {
		// stasis is no longer in the foreground: without ignoring
		// SIGTTOU, taking the terminal back would stop it.
		signal.Ignore(unix.SIGTTOU)
		defer signal.Reset(unix.SIGTTOU)
		_ = unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, oldFg)
		_ = unix.IoctlSetTermios(fd, unix.TCSETS, oldTio)
		return nil
	})
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, c.Pgrp); err != nil {
		return fmt.Errorf("-j: give %s to group %d: %w", c.File.Name(), c.Pgrp, os.NewSyscallError("ioctl TIOCSPGRP", err))
	}
	files.RestoreState(r, "tty", func() *ttyRestore { return &ttyRestore{} }).winchGroup = c.Pgrp
	return nil
}

// RedrawForeground sends SIGWINCH to the foreground group of a shell
// job once it runs: the terminal it now has may not have its old size,
// and full-screen programs redraw on it.
func RedrawForeground(r *files.Restorer) {
	if g := files.RestoreState(r, "tty", func() *ttyRestore { return &ttyRestore{} }).winchGroup; g > 0 {
		_ = unix.Kill(-g, unix.SIGWINCH)
	}
}

func groupInTree(procs []Process, pgid int) bool {
	for _, p := range procs {
		if p.Pgid == pgid && !p.Zombie {
			return true
		}
	}
	return false
}

func procByPid(procs []Process, pid int) remote.Task {
	for _, p := range procs {
		if p.Task.Pid() == pid {
			return p.Task
		}
	}
	return nil
}

// openCtty opens /dev/tty as a task of session sid, which has the
// session's terminal by now, and takes the file into stasis.
func openCtty(procs []Process, sid, flags int) (*os.File, error) {
	var t remote.Task
	for _, p := range procs {
		if p.Sid == sid && p.Live {
			t = p.Task
			break
		}
	}
	if t == nil {
		return nil, fmt.Errorf("/dev/tty of session %d: no process of the session is restored", sid)
	}
	fd, err := openIn(t, "/dev/tty", flags|unix.O_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("open /dev/tty in pid %d (session %d): %w", t.HostPid(), sid, err)
	}
	nfd, err := (&files.Fd{Pid: t.HostPid(), Num: int(fd)}).Dup()
	if _, cerr := t.Call("close", unix.SYS_CLOSE, fd); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(nfd), "/dev/tty"), nil
}

// openIn opens path in the task (openat from its cwd) and returns the new
// fd's number there.
func openIn(t remote.Task, path string, flags int) (uint64, error) {
	p, err := t.Put(0, append([]byte(path), 0))
	if err != nil {
		return 0, err
	}
	const atFdcwd = ^uint64(99) // AT_FDCWD, -100
	return t.Call("openat("+path+")", unix.SYS_OPENAT, atFdcwd, p, uint64(flags), 0)
}
