package files

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pidfd"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/proc"
)

// Pidfds (pidfd_open, clone with CLONE_PIDFD, and every os.Process of a
// Go program since Go 1.23, held until Wait): a reference to a process,
// as criu 4's pidfd_entry records it: the pid (fdinfo "Pid:"), or -1 for
// a process that is gone and reaped, and the flags (PIDFD_NONBLOCK is
// O_NONBLOCK, PIDFD_THREAD O_EXCL). The restore opens a pidfd of the
// restored process with that pid, or one of a process that has ended.
// A pidfd of a process outside the dumped tree is refused: after the
// restore its pid would name another process, or none.

func init() {
	Register(&Kind{Name: "pidfd", Type: fdinfo.FdTypes_PIDFD, Dump: dumpPidfd, Open: openPidfd})
}

// pidfdFlags are the flags pidfd_open takes, as they show in f_flags.
const pidfdFlags = unix.O_NONBLOCK | unix.O_EXCL

func dumpPidfd(t *Table, fd *Fd) (*fdinfo.FileEntry, error) {
	pid, err := pidfdPid(fd.Info)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fd, err)
	}
	if pid > 0 && !t.Tasks[pid] {
		return nil, &UnsupportedError{Pid: fd.Pid, Fd: fd.Num, Kind: fmt.Sprintf("a pidfd of pid %d (%s), which is not in the dumped tree", pid, commOf(pid)), Target: fd.Target,
			Hint: "dump a tree that holds that process too"}
	}
	return &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_PIDFD.Enum(),
		Id:   proto.Uint32(fd.ID),
		Pidfd: &pidfd.PidfdEntry{
			Id:    proto.Uint32(fd.ID),
			Ino:   proto.Uint32(uint32(fd.Stat.Ino)),
			Flags: proto.Uint32(anonFlags(fd.Info)),
			Nspid: proto.Int32(int32(pid)),
			Fown:  AnonFown(),
		},
	}, nil
}

// pidfdPid reads "Pid:" of a pidfd's fdinfo (fs/pidfs.c): the pid in
// stasis' pid namespace, -1 once the process is reaped.
func pidfdPid(fi *proc.Fdinfo) (int, error) {
	v, ok := fi.Extra["Pid"]
	if !ok {
		return 0, malformed("pidfd without a Pid line")
	}
	pid, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || pid < -1 || pid == 0 {
		return 0, malformed("pidfd Pid %q", v)
	}
	return pid, nil
}

func commOf(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// openPidfd opens a pidfd of the restored process, or of a process that
// has ended for a pidfd whose process was gone.
func openPidfd(r *Restorer, fe *fdinfo.FileEntry) (*os.File, error) {
	e := fe.GetPidfd()
	if fe.GetType() != fdinfo.FdTypes_PIDFD || e == nil {
		return nil, NotKind(fe, "a pidfd")
	}
	flags := int(e.GetFlags()) & pidfdFlags
	if int(e.GetFlags())&^(pidfdFlags|unix.O_ACCMODE|unix.O_LARGEFILE) != 0 {
		return nil, fmt.Errorf("reopen file id %d: pidfd flags %#o: %w", fe.GetId(), e.GetFlags(), images.ErrCorrupt)
	}
	pid := int(e.GetNspid())
	switch {
	case pid == -1:
		return endedPidfd(flags)
	case pid <= 0:
		return nil, fmt.Errorf("reopen file id %d: pidfd of pid %d: %w", fe.GetId(), pid, images.ErrCorrupt)
	}
	host := pid
	if r.HostPids != nil {
		var ok bool
		if host, ok = r.HostPids[pid]; !ok {
			return nil, fmt.Errorf("reopen file id %d: a pidfd of pid %d, which is not in the images: %w", fe.GetId(), pid, images.ErrCorrupt)
		}
	}
	fd, err := unix.PidfdOpen(host, flags)
	if err != nil {
		return nil, fmt.Errorf("reopen file id %d: pidfd of pid %d: %w", fe.GetId(), pid, os.NewSyscallError("pidfd_open", err))
	}
	return NewAnonFile(fd, "anon_inode:[pidfd]"), nil
}

// endedPidfd returns a pidfd of a process that has ended and been
// reaped: of stasis' own `stasis --version`, opened before it is waited
// for. With --pidns that process is not of the restored namespace: a
// signal through the pidfd fails with EINVAL there, not ESRCH.
func endedPidfd(flags int) (*os.File, error) {
	cmd := exec.Command("/proc/self/exe", "--version")
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start a process to end for a pidfd of a gone process: %w", err)
	}
	fd, err := unix.PidfdOpen(cmd.Process.Pid, flags&^unix.O_EXCL)
	werr := cmd.Wait()
	if err != nil {
		return nil, fmt.Errorf("pidfd of a gone process: %w", os.NewSyscallError("pidfd_open", err))
	}
	var ee *exec.ExitError
	if werr != nil && !errors.As(werr, &ee) { // how it ended does not matter
		unix.Close(fd)
		return nil, fmt.Errorf("pidfd of a gone process: %w", werr)
	}
	return NewAnonFile(fd, "anon_inode:[pidfd]"), nil
}
