package files

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"strconv"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/eventfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/proc"
)

func init() {
	register(&kind{name: "eventfd", typ: fdinfo.FdTypes_EVENTFD,
		dump: func(_ *Table, fd *Fd) (*fdinfo.FileEntry, error) { return DumpEventfd(fd.Pid, fd.Num, fd.ID, fd.Info) },
		open: func(_ *Restorer, fe *fdinfo.FileEntry) (*os.File, error) { return OpenEventfd(fe) }})
}

// This file also holds what the anon-inode kinds (eventfd, eventpoll,
// signalfd, timerfd) share: flags, fown and the wrapping of a new fd.

// DumpEventfd returns the entry of an eventfd: its counter, its flags and
// whether it is in semaphore mode. criu's eventfd_file_entry has no field
// for the mode, so it travels as EFD_SEMAPHORE (1) in flags: the file of an
// eventfd is always O_RDWR, so that bit (O_WRONLY) is otherwise never set,
// and criu hands flags to fcntl(F_SETFL), which ignores the access bits. A
// kernel older than 6.5 prints no "eventfd-semaphore:" line; the mode is
// then taken as off.
func DumpEventfd(pid, fd int, id uint32, fi *proc.Fdinfo) (*fdinfo.FileEntry, error) {
	count, sem, err := parseEventfd(fi)
	if err != nil {
		return nil, fmt.Errorf("dump fd %d of pid %d (eventfd): %w", fd, pid, err)
	}
	flags := anonFlags(fi) &^ unix.EFD_SEMAPHORE
	if sem {
		flags |= unix.EFD_SEMAPHORE
	}
	return &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_EVENTFD.Enum(),
		Id:   proto.Uint32(id),
		Efd: &eventfd.EventfdFileEntry{
			Id:      proto.Uint32(id),
			Flags:   proto.Uint32(flags),
			Fown:    anonFown(),
			Counter: proto.Uint64(count),
		},
	}, nil
}

// parseEventfd reads the counter ("eventfd-count: %16llx") and the mode
// ("eventfd-semaphore: %d", fs/eventfd.c) of an eventfd's fdinfo.
func parseEventfd(fi *proc.Fdinfo) (count uint64, sem bool, err error) {
	v, ok := fi.Extra["eventfd-count"]
	if !ok {
		return 0, false, malformed("no eventfd-count line")
	}
	count, err = strconv.ParseUint(v, 16, 64)
	// The kernel never lets the counter reach ULLONG_MAX.
	if err != nil || count == math.MaxUint64 {
		return 0, false, malformed("bad eventfd-count %q", v)
	}
	if s, ok := fi.Extra["eventfd-semaphore"]; ok {
		switch s {
		case "0":
		case "1":
			sem = true
		default:
			return 0, false, malformed("bad eventfd-semaphore %q", s)
		}
	}
	return count, sem, nil
}

// OpenEventfd creates an eventfd with the counter, mode and flags of the
// entry.
func OpenEventfd(fe *fdinfo.FileEntry) (*os.File, error) {
	e := fe.GetEfd()
	if fe.GetType() != fdinfo.FdTypes_EVENTFD || e == nil {
		return nil, notKind(fe, "an eventfd")
	}
	count := e.GetCounter()
	if count == math.MaxUint64 {
		return nil, fmt.Errorf("reopen eventfd file id %d: counter %#x: %w", fe.GetId(), count, images.ErrCorrupt)
	}
	cflags := unix.EFD_CLOEXEC
	if e.GetFlags()&unix.EFD_SEMAPHORE != 0 {
		cflags |= unix.EFD_SEMAPHORE
	}
	// eventfd2 takes an unsigned int: a larger counter is written instead.
	// A write of up to ULLONG_MAX-1 into a zero counter never blocks.
	fd, err := unix.Eventfd(0, cflags)
	if err != nil {
		return nil, fmt.Errorf("reopen eventfd file id %d: %w", fe.GetId(), os.NewSyscallError("eventfd2", err))
	}
	f := newAnonFile(fd, "anon_inode:[eventfd]")
	if count != 0 {
		var b [8]byte
		binary.NativeEndian.PutUint64(b[:], count)
		if _, err := unix.Write(fd, b[:]); err != nil {
			f.Close()
			return nil, fmt.Errorf("reopen eventfd file id %d: set counter %#x: %w", fe.GetId(), count, os.NewSyscallError("write", err))
		}
	}
	if err := anonSetfl(fd, e.GetFlags()); err != nil {
		f.Close()
		return nil, fmt.Errorf("reopen eventfd file id %d: %w", fe.GetId(), err)
	}
	return f, nil
}

// anonFlags is the file's status flags as the entry keeps them: criu keeps
// close-on-exec in the fd table (fdinfo-N.img), not in the file.
func anonFlags(fi *proc.Fdinfo) uint32 { return fi.Flags &^ unix.O_CLOEXEC }

// anonFown is an empty owner: these files take no F_SETOWN state yet.
func anonFown() *fown.FownEntry {
	return &fown.FownEntry{
		Uid: proto.Uint32(0), Euid: proto.Uint32(0), Signum: proto.Uint32(0),
		PidType: proto.Uint32(0), Pid: proto.Uint32(0),
	}
}

// anonSetflMask is what fcntl(F_SETFL) changes on an anon-inode file
// (SETFL_MASK in fs/fcntl.c, less O_DIRECT, which these files refuse).
// O_ASYNC is not among them: the task sets it itself (see Owner.Async).
const anonSetflMask = unix.O_APPEND | unix.O_NONBLOCK | unix.O_NOATIME

// anonSetfl gives fd the status flags of an entry, as criu's
// rst_file_params does.
func anonSetfl(fd int, flags uint32) error {
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

// newAnonFile wraps a new fd, created blocking: os.NewFile registers a
// non-blocking fd with the runtime poller, and O_NONBLOCK must be set
// only afterwards (anonSetfl) so that nothing in stasis ever changes the
// flags of the open file description the task will share.
func newAnonFile(fd int, name string) *os.File { return os.NewFile(uintptr(fd), name) }

// malformed is an error about the content of an fdinfo file.
func malformed(format string, args ...any) error {
	return &proc.SyntaxError{File: "fdinfo", Msg: fmt.Sprintf(format, args...)}
}

// notKind is the error of an Open* function given an entry of another kind.
func notKind(fe *fdinfo.FileEntry, kind string) error {
	return fmt.Errorf("reopen file id %d: entry of type %v is not %s: %w", fe.GetId(), fe.GetType(), kind, images.ErrCorrupt)
}
