package files

import (
	"fmt"
	"os"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/proc"
)

// A Kind is one kind of open file (criu's fd_types): how an fd of it is
// dumped into a FileEntry and how that entry is opened again, side by
// side. Each kind registers itself from the init of its file (in this
// package or in a package of its own, such as sockets or tty, imported
// for its registration like a database/sql driver), so that a new kind
// touches no other file.
type Kind struct {
	Name string         // as kindOf names it, and as errors say it
	Type fdinfo.FdTypes // the FileEntry type it opens
	// A kind of fd may give entries of several types (a socket is a unix,
	// inet, netlink or packet one): then one Kind with only Name and Dump
	// and one per type with only Type and Open are registered. A Kind
	// with only Write keeps an image about the tree's files as a whole
	// (file locks).

	// Dump returns the entry of fd, whose id is fd.ID.
	Dump func(t *Table, fd *Fd) (*fdinfo.FileEntry, error)
	// Check, if set, refuses what only the whole tree tells, once every
	// fd of it is dumped (Table.CheckTree), through t.Refuse (a preflight
	// lists them all); Write is run only if every Check passed.
	Check func(t *Table) error
	// Write, if set, writes the kind's own images once every fd of the
	// tree is dumped (the tree is still frozen).
	Write func(t *Table, dir *images.Dir) error
	// Open opens an entry again in stasis; the tasks get copies.
	Open func(r *Restorer, fe *fdinfo.FileEntry) (*os.File, error)
	// Device, if set, claims the character devices of the kind by their
	// device number (terminals): kindOf names such an fd by Name.
	Device func(rdev uint64) bool
}

var (
	kindsByName = map[string]*Kind{}
	kindsByType = map[fdinfo.FdTypes]*Kind{}
	kindOrder   []*Kind // registration order, for Write
)

// Register adds a kind to the registry; it panics on a name or type
// registered twice, which is a programming error.
func Register(k *Kind) {
	if k.Name != "" {
		if kindsByName[k.Name] != nil {
			panic("files: kind registered twice: " + k.Name)
		}
		kindsByName[k.Name] = k
	}
	if k.Open != nil {
		if kindsByType[k.Type] != nil {
			panic("files: type registered twice: " + k.Type.String())
		}
		kindsByType[k.Type] = k
	}
	kindOrder = append(kindOrder, k)
}

// Fd is one fd being dumped.
type Fd struct {
	Pid, Num int
	Target   string       // its /proc/PID/fd link
	Info     *proc.Fdinfo // its /proc/PID/fdinfo
	Stat     unix.Stat_t  // stat of the file it refers to
	ID       uint32       // the id its entry gets
	// Via is the socket in whose queue the file is in flight
	// (SCM_RIGHTS); then Pid and Num are stasis' own copy of it.
	Via *Fd
}

// Path is the fd's magic link, which opens the same file.
func (f *Fd) Path() string { return fmt.Sprintf("/proc/%d/fd/%d", f.Pid, f.Num) }

// Flags is the file's status flags without close-on-exec, which criu
// keeps in the fd table (fdinfo-N.img), not in the file.
func (f *Fd) Flags() uint32 { return f.Info.Flags &^ unix.O_CLOEXEC }

func (f *Fd) String() string {
	if f.Via != nil {
		return fmt.Sprintf("a file in flight to %s (%s)", f.Via, f.Via.Target)
	}
	return fmt.Sprintf("fd %d of pid %d", f.Num, f.Pid)
}

// UnsupportedError is the error of an fd of a kind stasis cannot
// checkpoint: "fd 42 of pid 123 is io_uring: not supported".
type UnsupportedError struct {
	Pid, Fd int
	Kind    string
	Target  string
	Hint    string // what the user can do, if anything
}

func (e *UnsupportedError) Error() string {
	s := fmt.Sprintf("fd %d of pid %d is %s: not supported (%s)", e.Fd, e.Pid, e.Kind, e.Target)
	if e.Hint != "" {
		s += "; " + e.Hint
	}
	return s
}

func (e *UnsupportedError) Is(target error) bool { return target == ErrUnsupported }

// memMajor is the major number of /dev/null, /dev/zero, /dev/full,
// /dev/random and /dev/urandom; criu dumps these as regular files.
const memMajor = 1

// kindOf names the kind of an fd from its /proc/PID/fd link and its stat.
func kindOf(target string, st *unix.Stat_t) string {
	switch {
	case strings.HasPrefix(target, "pipe:"):
		return "pipe"
	case strings.HasPrefix(target, "socket:"):
		return "socket"
	case strings.HasPrefix(target, "anon_inode:"):
		return strings.Trim(strings.TrimPrefix(target, "anon_inode:"), "[]")
	case strings.HasPrefix(target, "/memfd:"):
		return "memfd"
	case nsTarget.MatchString(target):
		return "ns"
	case !strings.HasPrefix(target, "/"):
		return "unknown object"
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFDIR, unix.S_IFLNK:
		// A symbolic link is open only as itself (O_PATH|O_NOFOLLOW).
		return "reg"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFCHR:
		if unix.Major(st.Rdev) == memMajor {
			return "reg"
		}
		for _, k := range kindOrder {
			if k.Device != nil && k.Device(st.Rdev) {
				return k.Name
			}
		}
		return fmt.Sprintf("character device %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	case unix.S_IFBLK:
		return fmt.Sprintf("block device %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	case unix.S_IFSOCK:
		return "socket"
	}
	return fmt.Sprintf("file of mode %#o", st.Mode&unix.S_IFMT)
}

// Dup returns a copy of the fd in stasis (pidfd_getfd): the same open
// file description, for calls only a holder can make (getsockopt, recv
// with MSG_PEEK, ioctl). It is a raw fd, kept out of the runtime's
// poller; the caller closes it with unix.Close. The task's fd is not
// touched.
func (f *Fd) Dup() (int, error) {
	pidfd, err := unix.PidfdOpen(f.Pid, 0)
	if err != nil {
		return -1, fmt.Errorf("%s: %w", f, os.NewSyscallError("pidfd_open", err))
	}
	defer unix.Close(pidfd)
	nfd, err := unix.PidfdGetfd(pidfd, f.Num, 0)
	if err != nil {
		return -1, fmt.Errorf("%s: %w", f, os.NewSyscallError("pidfd_getfd", err))
	}
	return nfd, nil
}

// DumpState returns the dump state a kind keeps in t under key (its
// table of pipes, of locks, ...), made by mk the first time: a kind in a
// package of its own keeps its state there too.
func DumpState[T any](t *Table, key string, mk func() *T) *T { return stateOf(t.state, key, mk) }

// RestoreState is DumpState for the restore: the state a kind keeps in r.
func RestoreState[T any](r *Restorer, key string, mk func() *T) *T { return stateOf(r.state, key, mk) }
