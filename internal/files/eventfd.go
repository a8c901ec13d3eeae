package files

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"strconv"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/eventfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/proc"
)

func init() {
	Register(&Kind{Name: "eventfd", Type: fdinfo.FdTypes_EVENTFD,
		Dump: func(_ *Table, fd *Fd) (*fdinfo.FileEntry, error) { return DumpEventfd(fd.Pid, fd.Num, fd.ID, fd.Info) },
		Open: func(_ *Restorer, fe *fdinfo.FileEntry) (*os.File, error) { return OpenEventfd(fe) }})
}

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
			Fown:    AnonFown(),
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
		return nil, NotKind(fe, "an eventfd")
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
	f := NewAnonFile(fd, "anon_inode:[eventfd]")
	if count != 0 {
		var b [8]byte
		binary.NativeEndian.PutUint64(b[:], count)
		if _, err := unix.Write(fd, b[:]); err != nil {
			f.Close()
			return nil, fmt.Errorf("reopen eventfd file id %d: set counter %#x: %w", fe.GetId(), count, os.NewSyscallError("write", err))
		}
	}
	if err := AnonSetfl(fd, e.GetFlags()); err != nil {
		f.Close()
		return nil, fmt.Errorf("reopen eventfd file id %d: %w", fe.GetId(), err)
	}
	return f, nil
}
