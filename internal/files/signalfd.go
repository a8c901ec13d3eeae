package files

import (
	"fmt"
	"math/bits"
	"os"
	"strconv"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/signalfd"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/proc"
)

func init() {
	Register(&Kind{Name: "signalfd", Type: fdinfo.FdTypes_SIGNALFD,
		Dump: func(_ *Table, fd *Fd) (*fdinfo.FileEntry, error) { return DumpSignalfd(fd.Pid, fd.Num, fd.ID, fd.Info) },
		Open: func(_ *Restorer, fe *fdinfo.FileEntry) (*os.File, error) { return OpenSignalfd(fe) }})
}

// DumpSignalfd returns the entry of a signalfd: the signals it accepts.
// Pending signals belong to the task, not to the signalfd, and are dumped
// with it.
func DumpSignalfd(pid, fd int, id uint32, fi *proc.Fdinfo) (*fdinfo.FileEntry, error) {
	mask, err := parseSigmask(fi)
	if err != nil {
		return nil, fmt.Errorf("dump fd %d of pid %d (signalfd): %w", fd, pid, err)
	}
	return &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_SIGNALFD.Enum(),
		Id:   proto.Uint32(id),
		Sgfd: &signalfd.SignalfdEntry{
			Id:      proto.Uint32(id),
			Flags:   proto.Uint32(anonFlags(fi)),
			Fown:    AnonFown(),
			Sigmask: proto.Uint64(mask),
		},
	}, nil
}

// parseSigmask reads "sigmask:\t%016x" (signalfd_show_fdinfo,
// fs/signalfd.c): bit N-1 set when signal N is accepted.
func parseSigmask(fi *proc.Fdinfo) (uint64, error) {
	v, ok := fi.Extra["sigmask"]
	if !ok {
		return 0, malformed("no sigmask line")
	}
	m, err := strconv.ParseUint(v, 16, 64)
	if err != nil {
		return 0, malformed("bad sigmask %q", v)
	}
	return m, nil
}

// OpenSignalfd creates a signalfd accepting the signals of the entry, with
// its flags. The kernel drops SIGKILL and SIGSTOP from any mask.
func OpenSignalfd(fe *fdinfo.FileEntry) (*os.File, error) {
	e := fe.GetSgfd()
	if fe.GetType() != fdinfo.FdTypes_SIGNALFD || e == nil {
		return nil, NotKind(fe, "a signalfd")
	}
	var set unix.Sigset_t
	m := e.GetSigmask()
	for sig := 1; sig <= 64; sig++ {
		if m&(1<<(sig-1)) != 0 {
			set.Val[(sig-1)/bits.UintSize] |= 1 << ((sig - 1) % bits.UintSize)
		}
	}
	fd, err := unix.Signalfd(-1, &set, unix.SFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("reopen signalfd file id %d (mask %#x): %w", fe.GetId(), m, os.NewSyscallError("signalfd4", err))
	}
	f := NewAnonFile(fd, "anon_inode:[signalfd]")
	if err := AnonSetfl(fd, e.GetFlags()); err != nil {
		f.Close()
		return nil, fmt.Errorf("reopen signalfd file id %d: %w", fe.GetId(), err)
	}
	return f, nil
}
