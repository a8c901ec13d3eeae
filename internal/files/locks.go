package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	filelock "github.com/checkpoint-restore/go-criu/v8/crit/images/file-lock"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/proc"
)

// File locks (-l/--file-locks): flock(2), POSIX record locks, OFD locks
// and leases (F_SETLEASE), in criu's filelocks.img, one file_lock_entry
// per lock held by the tree: flag (the kind), type (F_RDLCK or F_WRLCK),
// the pid and fd of a holder, start and len (0: to the end of the file),
// as criu 4.x writes them (criu/file-lock.c). A lease being broken has
// the type it is being broken to (F_UNLCK or F_RDLCK) with
// leaseBreaking set, start and len 0.
//
// Who owns a lock decides how it comes back. A POSIX lock belongs to a
// process (its file table): the restored task must take it itself, with
// an fcntl injected in it once its fds are in place (locks_task.go).
// flock and OFD locks belong to an open file description, which the
// restored task shares with the file stasis opened (Restorer.Open): stasis
// takes them on its own copy, and the lock stays with the description
// when stasis closes it. A lease belongs to the open file description
// too, but taking one makes the taker the file's owner and registers its
// fd for the break signal: the task takes it itself, like a POSIX lock.

// filelocksImg is criu's image of the file locks of the whole tree.
const filelocksImg = "filelocks.img"

// The flag of a file_lock_entry (FL_* in criu/include/file-lock.h).
const (
	flPosix = 1
	flFlock = 2
	flOFD   = 4
	flLease = 8
)

// leaseBreaking marks, in the type of a lease entry, a lease being broken
// (LEASE_BREAKING in criu/include/file-lock.h): the rest of the type is
// the one it is being broken to.
const leaseBreaking = 4

func init() {
	// File locks are no kind of fd, but their image is written with the
	// images of the kinds, once every fd of the tree is dumped. FdTypes
	// UND is no type a files.img entry may have, so nothing opens this.
	Register(&Kind{Write: writeLocks})
}

// lockDump is the dump state: the locks found so far, and the ones
// already recorded, as a lock shows in the fdinfo of every fd that
// shares its open file description.
type lockDump struct {
	entries []*filelock.FileLockEntry
	seen    map[lockKey]bool
}

// lockKey names one lock: its owner (a pid for POSIX locks, 0 for the
// others, which the file id names), the file, its kind, type and range.
type lockKey struct {
	pid        int
	file       uint32
	kind       proc.LockKind
	write      bool
	start, end int64
}

// dumpLocks records the locks the fdinfo of fd lists: those taken through
// its open file description (flock, OFD) and the POSIX ones of its
// process on that file. id is the fd's file id.
func (t *Table) dumpLocks(fd *Fd, id uint32) error {
	st := stateOf(t.state, "file locks", func() *lockDump { return &lockDump{seen: map[lockKey]bool{}} })
	locks, err := proc.FdinfoLocks(fd.Info)
	if err != nil {
		return fmt.Errorf("locks of %s: %w", fd, err)
	}
	for _, l := range locks {
		if l.Blocked {
			continue // a waiter holds nothing
		}
		if err := st.add(t, fd, id, l); err != nil {
			return err
		}
	}
	return nil
}

func (st *lockDump) add(t *Table, f *Fd, id uint32, l proc.Lock) error {
	pid, fd := f.Pid, f.Num
	var flag uint32
	switch l.Kind {
	case proc.LockPosix:
		flag = flPosix
	case proc.LockFlock:
		flag = flFlock
	case proc.LockOFD:
		flag = flOFD
	case proc.LockLease:
		flag = flLease
	default:
		return &UnsupportedError{Pid: pid, Fd: fd, Kind: "locked by a " + string(l.Kind), Target: fdTarget(pid, fd)}
	}
	typ := uint32(unix.F_RDLCK)
	if l.Write {
		typ = unix.F_WRLCK
	}
	if l.Breaking {
		var err error
		if typ, err = breakingLeaseType(f, l); err != nil {
			return err
		}
	}
	key := lockKey{file: id, kind: l.Kind, write: l.Write, start: l.Start, end: l.End}
	if l.Kind == proc.LockPosix {
		key.pid = pid
	}
	if st.seen[key] {
		return nil
	}
	st.seen[key] = true
	if !t.Opts.FileLocks {
		return fmt.Errorf("pid %d holds %s on %s (fd %d): dump with -l/--file-locks to checkpoint file locks",
			pid, describeLock(flag, typ, l.Start, l.Len()), fdTarget(pid, fd), fd)
	}
	st.entries = append(st.entries, &filelock.FileLockEntry{
		Flag:  proto.Uint32(flag),
		Type:  proto.Uint32(typ),
		Pid:   proto.Int32(int32(pid)),
		Fd:    proto.Int32(int32(fd)),
		Start: proto.Int64(l.Start),
		Len:   proto.Int64(l.Len()),
	})
	return nil
}

// breakingLeaseType is the type of the entry of a lease being broken:
// the type it is being broken to, with leaseBreaking. The kernel prints
// that target type in fdinfo since 4.x, older ones the lease's own type:
// F_GETLEASE on a copy of the fd (the same open file description) is
// the authority either way.
func breakingLeaseType(f *Fd, l proc.Lock) (uint32, error) {
	cp, err := f.Dup()
	if err != nil {
		return 0, err
	}
	defer unix.Close(cp)
	target, err := unix.FcntlInt(uintptr(cp), unix.F_GETLEASE, 0)
	if err != nil {
		return 0, fmt.Errorf("lease of %s: %w", f, os.NewSyscallError("fcntl F_GETLEASE", err))
	}
	switch target {
	case unix.F_UNLCK, unix.F_RDLCK:
		return uint32(target) | leaseBreaking, nil
	}
	// A write lease is never the target of a break.
	return 0, fmt.Errorf("%s: fdinfo shows a lease being broken, F_GETLEASE type %d; dump again", f, target)
}

func fdTarget(pid, fd int) string {
	s, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
	if err != nil {
		return "?"
	}
	return s
}

func writeLocks(t *Table, dir *images.Dir) error {
	st, ok := t.state["file locks"].(*lockDump)
	if !ok || len(st.entries) == 0 {
		return nil
	}
	ms := make([]proto.Message, len(st.entries))
	for i, e := range st.entries {
		ms[i] = e
	}
	return dir.Write(filelocksImg, ms...)
}

// describeLock says what a lock is, for errors: "a POSIX write lock
// (bytes 20-29)", "an flock read lock", "an OFD read lock (bytes 50-EOF)",
// "a write lease", "a lease being broken to F_UNLCK".
func describeLock(flag, typ uint32, start, length int64) string {
	mode := "read"
	if typ == unix.F_WRLCK {
		mode = "write"
	}
	switch flag {
	case flLease:
		switch typ {
		case unix.F_RDLCK, unix.F_WRLCK:
			return "a " + mode + " lease"
		case unix.F_UNLCK | leaseBreaking:
			return "a lease being broken to F_UNLCK"
		case unix.F_RDLCK | leaseBreaking:
			return "a write lease being broken to F_RDLCK"
		}
		return fmt.Sprintf("a lease of type %#x", typ)
	case flFlock:
		return "an flock " + mode + " lock"
	case flPosix, flOFD:
		name := "a POSIX"
		if flag == flOFD {
			name = "an OFD"
		}
		end := "EOF"
		if length > 0 {
			end = fmt.Sprint(start + length - 1)
		}
		return fmt.Sprintf("%s %s lock (bytes %d-%s)", name, mode, start, end)
	}
	return fmt.Sprintf("a lock of flag %d", flag)
}

// describeEntry says what the lock of an entry is, for errors.
func describeEntry(e *filelock.FileLockEntry) string {
	return describeLock(e.GetFlag(), e.GetType(), e.GetStart(), e.GetLen())
}

// lockRestore is the restore state: the locks of the image by pid.
type lockRestore struct {
	byPid map[int][]*filelock.FileLockEntry
	err   error
}

// locksOf returns the file locks pid held when dumped. The first call
// reads filelocks.img and refuses it if the restore is without
// -l/--file-locks, or if an entry is not one stasis can take again.
func (r *Restorer) locksOf(pid int) ([]*filelock.FileLockEntry, error) {
	st := stateOf(r.state, "file locks", func() *lockRestore {
		st := &lockRestore{}
		st.byPid, st.err = r.readLocks()
		return st
	})
	if st.err != nil {
		return nil, st.err
	}
	return st.byPid[pid], nil
}

func (r *Restorer) readLocks() (map[int][]*filelock.FileLockEntry, error) {
	if !r.Dir.Has(filelocksImg) {
		return nil, nil
	}
	ents, err := images.ReadAll(r.Dir, filelocksImg, func() *filelock.FileLockEntry { return &filelock.FileLockEntry{} })
	if err != nil {
		return nil, err
	}
	if len(ents) > 0 && !r.Opts.FileLocks {
		e := ents[0]
		return nil, fmt.Errorf("the images hold %d file lock(s), the first %s of pid %d on fd %d: restore with -l/--file-locks to take them again",
			len(ents), describeEntry(e), e.GetPid(), e.GetFd())
	}
	byPid := map[int][]*filelock.FileLockEntry{}
	for i, e := range ents {
		if err := checkLockEntry(e); err != nil {
			return nil, fmt.Errorf("%s entry %d: %w: %w", filelocksImg, i, err, images.ErrCorrupt)
		}
		byPid[int(e.GetPid())] = append(byPid[int(e.GetPid())], e)
	}
	return byPid, nil
}

// checkLockEntry refuses what this restore cannot take again: criu's old
// LOCK_MAND flocks, unlock entries, negative ranges, leases of a range.
func checkLockEntry(e *filelock.FileLockEntry) error {
	switch e.GetFlag() {
	case flPosix, flFlock, flOFD:
	case flLease:
		switch e.GetType() {
		case unix.F_RDLCK, unix.F_WRLCK, unix.F_UNLCK | leaseBreaking, unix.F_RDLCK | leaseBreaking:
		default:
			return fmt.Errorf("lease of pid %d on fd %d has type %#x, want F_RDLCK or F_WRLCK, or F_UNLCK or F_RDLCK with LEASE_BREAKING (4)",
				e.GetPid(), e.GetFd(), e.GetType())
		}
		if e.GetPid() <= 0 || e.GetFd() < 0 || e.GetStart() != 0 || e.GetLen() != 0 {
			return fmt.Errorf("lease of pid %d on fd %d at %d len %d: want a holder, start 0 and len 0", e.GetPid(), e.GetFd(), e.GetStart(), e.GetLen())
		}
		return nil
	default:
		return fmt.Errorf("unknown lock flag %d", e.GetFlag())
	}
	if t := e.GetType(); t != unix.F_RDLCK && t != unix.F_WRLCK {
		return fmt.Errorf("lock of pid %d on fd %d has type %#x, want F_RDLCK or F_WRLCK", e.GetPid(), e.GetFd(), t)
	}
	if e.GetPid() <= 0 || e.GetFd() < 0 || e.GetStart() < 0 || e.GetLen() < 0 {
		return fmt.Errorf("lock of pid %d on fd %d at %d len %d is out of range", e.GetPid(), e.GetFd(), e.GetStart(), e.GetLen())
	}
	return nil
}

// isPosixLock tells a lock the process itself must take (see
// posixLockArg) from one that belongs to the open file (see lockFile).
func isPosixLock(e *filelock.FileLockEntry) bool { return e.GetFlag() == flPosix }

// isLease tells a lease, which the process itself must take (see
// leaseType) and, if it was being broken, stasis break again (breakLease).
func isLease(e *filelock.FileLockEntry) bool { return e.GetFlag() == flLease }

// isBreakingLease tells a lease that was being broken.
func isBreakingLease(e *filelock.FileLockEntry) bool {
	return isLease(e) && e.GetType()&leaseBreaking != 0
}

// flockSize is sizeof(struct flock) on x86_64: short l_type, short
// l_whence, (pad) off_t l_start, off_t l_len, pid_t l_pid, (pad).
const flockSize = 32

// posixLockArg is the struct flock of fcntl(fd, F_SETLK, arg) that takes
// the POSIX lock of e again, for a task to call.
func posixLockArg(e *filelock.FileLockEntry) []byte {
	b := make([]byte, flockSize)
	binary.LittleEndian.PutUint16(b[0:], uint16(e.GetType()))
	binary.LittleEndian.PutUint16(b[2:], unix.SEEK_SET)
	binary.LittleEndian.PutUint64(b[8:], uint64(e.GetStart()))
	binary.LittleEndian.PutUint64(b[16:], uint64(e.GetLen()))
	return b
}

// leaseType is the type a task passes to fcntl(fd, F_SETLEASE) to take
// the lease of e again on the file of id: its own; for a lease being
// broken, the one it had before the break, which breakLease then breaks.
// A break to F_RDLCK was of a write lease; one to F_UNLCK is taken as a
// read lease if the file is open read-only, else as a write lease, as
// criu does: the holder must give it up either way.
func (r *Restorer) leaseType(id uint32, e *filelock.FileLockEntry) int {
	switch e.GetType() {
	case unix.F_RDLCK | leaseBreaking:
		return unix.F_WRLCK
	case unix.F_UNLCK | leaseBreaking:
		if r.Files[id].GetReg().GetFlags()&unix.O_ACCMODE == unix.O_RDONLY {
			return unix.F_RDLCK
		}
		return unix.F_WRLCK
	}
	return int(e.GetType())
}

// breakLease starts the break of the lease of e, which the task has
// just taken (leaseType) on the file of id, as the open that was waiting
// for it at the dump had: an open of the file for reading (a break to
// F_RDLCK) or for writing (to F_UNLCK), non-blocking, which the lease
// refuses with EWOULDBLOCK. The lease then waits for its holder to give
// it up (or for /proc/sys/fs/lease-break-time to run out, from now on).
// It returns the signal the break sent to the file's owner (F_SETSIG,
// or SIGIO), which the caller discards: the holder was told at the dump
// already.
func (r *Restorer) breakLease(id uint32, e *filelock.FileLockEntry) (unix.Signal, error) {
	f, err := r.Open(id)
	if err != nil {
		return 0, err
	}
	flags := unix.O_WRONLY
	if e.GetType() == unix.F_RDLCK|leaseBreaking {
		flags = unix.O_RDONLY
	}
	// Through stasis's fd: the very file, even if its name changed.
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), flags|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err == nil {
		unix.Close(fd)
		return 0, lockError(e, r.Files[id], errors.New("the lease took an open without a break: it is not in place"))
	}
	if !errors.Is(err, unix.EWOULDBLOCK) {
		return 0, lockError(e, r.Files[id], fmt.Errorf("break it again: %w", os.NewSyscallError("open", err)))
	}
	sig, err := unix.FcntlInt(f.Fd(), unix.F_GETSIG, 0)
	if err != nil {
		return 0, lockError(e, r.Files[id], os.NewSyscallError("fcntl F_GETSIG", err))
	}
	if sig == 0 {
		return unix.SIGIO, nil
	}
	return unix.Signal(sig), nil
}

// lockFile takes the flock or OFD lock of e on the file of id, which
// stasis opened and whose open file description the task shares. It
// never waits: a lock another process took since the dump is an error,
// not a hang.
func (r *Restorer) lockFile(id uint32, e *filelock.FileLockEntry) error {
	f, err := r.Open(id)
	if err != nil {
		return err
	}
	switch e.GetFlag() {
	case flFlock:
		how := unix.LOCK_SH
		if e.GetType() == unix.F_WRLCK {
			how = unix.LOCK_EX
		}
		err = unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		err = os.NewSyscallError("flock", err)
	case flOFD:
		fl := unix.Flock_t{Type: int16(e.GetType()), Whence: unix.SEEK_SET, Start: e.GetStart(), Len: e.GetLen()}
		err = unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &fl)
		err = os.NewSyscallError("fcntl(F_OFD_SETLK)", err)
	default:
		return fmt.Errorf("%s is not a lock of an open file", describeEntry(e))
	}
	return lockError(e, r.Files[id], err)
}

// lockError is the error of taking the lock of e on the file of fe again,
// nil if err is.
func lockError(e *filelock.FileLockEntry, fe *fdinfo.FileEntry, err error) error {
	if err == nil {
		return nil
	}
	name := fmt.Sprintf("file id %d", fe.GetId())
	if fe.GetReg() != nil {
		name = fe.GetReg().GetName()
	}
	msg := fmt.Sprintf("take %s of pid %d on %s (fd %d) again", describeEntry(e), e.GetPid(), name, e.GetFd())
	if isLease(e) {
		switch {
		case errors.Is(err, unix.EAGAIN):
			return fmt.Errorf("%s: another process has the file open now (for writing; for a write lease, at all): close it and restore again: %w", msg, err)
		case errors.Is(err, unix.EACCES):
			return fmt.Errorf("%s: the task may not take a lease on a file it does not own: %w", msg, err)
		}
		return fmt.Errorf("%s: %w", msg, err)
	}
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%s: another process holds a conflicting lock now: %w", msg, err)
	}
	return fmt.Errorf("%s: %w", msg, err)
}
