package sockets

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/proc"
)

// Files in flight: the fds a message queued to a unix socket carries
// (SCM_RIGHTS), sent and not yet received, so held by no process. The
// peek of the queue (peekUnixQueue) installs a copy of each into stasis;
// each is dumped as a file of the table like the tree's fds, by the same
// kinds, as an fd of stasis itself (criu's dump_my_file): a file the
// tree also holds is found by kcmp and keeps the tree's id and its one
// open file description. The copies stay open until the table is done
// (Finish): the kinds read them again when they write their images, and
// a closed number taken again by another file would be found equal to it.

// inflightKinds are the kinds whose dump does not need the fd to be a
// task's: the others read or act on their owner (a tty its session, a TCP socket is put in
// repair mode and given back to it).
var inflightKinds = map[string]bool{"reg": true, "fifo": true, "pipe": true, "memfd": true, "eventfd": true, "socket": true, "pidfd": true,
	"eventpoll": true} // its items are found among the tree's fds (files/epolltarget.go)

// dumpInflight records the files a message queued on via carries, whose
// copies in stasis are fds, and returns their ids in order. It owns fds.
func dumpInflight(t *files.Table, via *files.Fd, msg int, fds []int) ([]uint32, error) {
	keepInflight(t, fds)
	self := os.Getpid()
	ids := make([]uint32, 0, len(fds))
	for i, num := range fds {
		fd := &files.Fd{Pid: self, Num: num, Via: via}
		id, err := t.DumpFile(fd, allowInflight)
		var ue *files.UnsupportedError
		if errors.As(err, &ue) && ue.Pid == via.Pid && ue.Fd == via.Num {
			return nil, err
		}
		if err != nil {
			return nil, fmt.Errorf("queued message %d carries %d files (SCM_RIGHTS), file %d: %w", msg, len(fds), i+1, err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// allowInflight refuses the files in flight stasis cannot dump as its
// own, naming the socket whose queue carries them.
func allowInflight(fd *files.Fd, kind string) error {
	what := kind
	ok := inflightKinds[kind]
	if ok && kind == "socket" {
		family, err := unix.GetsockoptInt(fd.Num, unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err != nil {
			return fmt.Errorf("%s (%s): %w", fd, fd.Target, os.NewSyscallError("getsockopt SO_DOMAIN", err))
		}
		if ok = family == unix.AF_UNIX; !ok {
			if what = familyNames[family]; what == "" {
				what = fmt.Sprintf("a socket of family %d", family)
			}
		}
	}
	if ok {
		// A lock's owner is a task: stasis' copy would take it.
		locks, err := proc.FdinfoLocks(fd.Info)
		if err != nil {
			return fmt.Errorf("locks of %s: %w", fd, err)
		}
		switch {
		case len(locks) > 0:
			what = fmt.Sprintf("%s locked (%s)", kind, locks[0].Kind)
		case fd.Info.Flags&unix.O_ASYNC != 0:
			// Its owner is given back by the task that holds it.
			what = kind + " with O_ASYNC"
		default:
			return nil
		}
	}
	return &files.UnsupportedError{Pid: fd.Via.Pid, Fd: fd.Via.Num, Kind: "a unix socket whose queue carries " + what + " in flight (SCM_RIGHTS)",
		Target: fd.Via.Target + " carries " + fd.Target, Hint: "let the receiver take it (recvmsg) before the dump"}
}

// keepInflight keeps fds open until the table is done.
func keepInflight(t *files.Table, fds []int) {
	if len(fds) == 0 {
		return
	}
	t.AtFinish(func(bool) error {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil
	})
}
