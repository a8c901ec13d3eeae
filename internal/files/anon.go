package files

import (
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/proc"
)

// What the anon-inode kinds (eventfd, eventpoll, signalfd, timerfd,
// inotify, fanotify, pidfd, ...) and the sockets share: status flags,
// an empty owner, the wrapping of a new fd, and the errors about their
// fdinfo and entries. The exported ones are for the kinds registered
// from packages of their own (sockets, terminals).

// anonFlags is the file's status flags as the entry keeps them: criu keeps
// close-on-exec in the fd table (fdinfo-N.img), not in the file.
func anonFlags(fi *proc.Fdinfo) uint32 { return fi.Flags &^ unix.O_CLOEXEC }

// AnonFown is an empty owner for an entry's fown field, which criu
// requires: the owner an fd really has (F_SETOWN) is set on the entry
// by the table after the kind's Dump, and given back by the task.
func AnonFown() *fown.FownEntry {
	return &fown.FownEntry{
		Uid: proto.Uint32(0), Euid: proto.Uint32(0), Signum: proto.Uint32(0),
		PidType: proto.Uint32(0), Pid: proto.Uint32(0),
	}
}

// anonSetflMask is what fcntl(F_SETFL) changes on an anon-inode file
// (SETFL_MASK in fs/fcntl.c, less O_DIRECT, which these files refuse).
// O_ASYNC is not among them: the task sets it itself (see fileOwner.Async).
const anonSetflMask = unix.O_APPEND | unix.O_NONBLOCK | unix.O_NOATIME

// AnonSetfl gives fd, a file a kind's Open made, the status flags of its
// entry (O_APPEND, O_NONBLOCK, O_NOATIME), as criu's rst_file_params
// does; the task sets O_ASYNC itself.
func AnonSetfl(fd int, flags uint32) error {
	cur, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return os.NewSyscallError("fcntl F_GETFL", err)
	}
	want := cur&^anonSetflMask | int(flags)&anonSetflMask
	if want == cur {
		return nil
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, want); err != nil {
		return os.NewSyscallError(fmt.Sprintf("fcntl F_SETFL %#o", want), err)
	}
	return nil
}

// NewAnonFile wraps a new fd for a kind's Open, created blocking, and
// AnonSetfl sets its flags afterwards: os.NewFile registers a
// non-blocking fd with the runtime poller, and O_NONBLOCK must be set
// only afterwards (AnonSetfl) so that nothing in stasis ever changes the
// flags of the open file description the task will share.
func NewAnonFile(fd int, name string) *os.File { return os.NewFile(uintptr(fd), name) }

// malformed is an error about the content of an fdinfo file.
func malformed(format string, args ...any) error {
	return &proc.SyntaxError{File: "fdinfo", Msg: fmt.Sprintf(format, args...)}
}

// NotKind is the error of a kind's Open given an entry without the
// sub-message of its kind (say "a unix socket"): a corrupt files.img.
func NotKind(fe *fdinfo.FileEntry, kind string) error {
	return fmt.Errorf("reopen file id %d: entry of type %v is not %s: %w", fe.GetId(), fe.GetType(), kind, images.ErrCorrupt)
}
