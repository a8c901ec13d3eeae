package files

import (
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"
)

// Open opens a regular-file entry again, in stasis, with its dumped flags
// and offset. The offset lives in the open file description, so the fd
// passed into the task shares it.
func Open(fe *fdinfo.FileEntry) (*os.File, error) {
	switch fe.GetType() {
	case fdinfo.FdTypes_EVENTFD:
		return OpenEventfd(fe)
	case fdinfo.FdTypes_EVENTPOLL:
		return OpenEpoll(fe)
	case fdinfo.FdTypes_SIGNALFD:
		return OpenSignalfd(fe)
	case fdinfo.FdTypes_TIMERFD:
		return OpenTimerfd(fe)
	}
	if fe.GetType() != fdinfo.FdTypes_REG || fe.GetReg() == nil {
		return nil, fmt.Errorf("file id %d of type %v: %w", fe.GetId(), fe.GetType(), ErrUnsupported)
	}
	r := fe.GetReg()
	// fdinfo never shows O_CREAT/O_TRUNC/O_EXCL; strip them anyway so that
	// a damaged image cannot truncate or create files.
	flags := int(r.GetFlags()) &^ (unix.O_CLOEXEC | unix.O_CREAT | unix.O_TRUNC | unix.O_EXCL | unix.O_NOCTTY)
	if r.GetMode()&unix.S_IFMT == unix.S_IFDIR {
		flags = unix.O_RDONLY | unix.O_DIRECTORY | (flags &^ unix.O_ACCMODE)
	}
	f, err := os.OpenFile(r.GetName(), flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("reopen file id %d: %w", fe.GetId(), err)
	}
	if r.GetPos() != 0 && r.GetMode()&unix.S_IFMT == unix.S_IFREG {
		if _, err := unix.Seek(int(f.Fd()), int64(r.GetPos()), 0); err != nil {
			f.Close()
			return nil, fmt.Errorf("seek %s to %d: %w", r.GetName(), r.GetPos(), err)
		}
	}
	return f, nil
}
