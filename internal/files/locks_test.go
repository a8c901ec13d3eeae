package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	filelock "github.com/checkpoint-restore/go-criu/v8/crit/images/file-lock"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
)

// lockedFile opens a temp file three times: a (flock LOCK_EX, POSIX read
// lock on bytes 0-4 and write lock from 100 to EOF), b a dup of a, c
// another open file with an OFD write lock on bytes 10-19. release closes
// them (once; it also runs at the end of the test).
func lockedFile(t *testing.T) (path string, a, b, c int, release func()) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "locked")
	if err := os.WriteFile(path, make([]byte, 200), 0o644); err != nil {
		t.Fatal(err)
	}
	var fds []int
	release = func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
		fds = nil
	}
	t.Cleanup(release)
	open := func() int {
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
		return fd
	}
	a, c = open(), open()
	b, err := unix.Dup(a)
	if err != nil {
		t.Fatal(err)
	}
	fds = append(fds, b)
	if err := unix.Flock(a, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	for _, l := range []unix.Flock_t{{Type: unix.F_RDLCK, Start: 0, Len: 5}, {Type: unix.F_WRLCK, Start: 100, Len: 0}} {
		if err := unix.FcntlFlock(uintptr(a), unix.F_SETLK, &l); err != nil {
			t.Fatal(err)
		}
	}
	ofd := unix.Flock_t{Type: unix.F_WRLCK, Start: 10, Len: 10}
	if err := unix.FcntlFlock(uintptr(c), unix.F_OFD_SETLK, &ofd); err != nil {
		t.Fatal(err)
	}
	return path, a, b, c, release
}

func dumpLocks(t *testing.T, opts DumpOptions, fds ...int) (*images.Dir, []*fdinfo.FdinfoEntry, error) {
	t.Helper()
	tab := NewTable(opts, func() int { return 1 })
	var ents []*fdinfo.FdinfoEntry
	for _, fd := range fds {
		e, err := tab.dumpFd(os.Getpid(), fd)
		if err != nil {
			return nil, ents, err // a lock refused
		}
		ents = append(ents, e)
	}
	dir, err := images.Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := tab.WriteImages(dir); err != nil {
		t.Fatal(err)
	}
	return dir, ents, nil
}

func TestLocksDumpRefusedWithoutFlag(t *testing.T) {
	path, a, b, c, _ := lockedFile(t)
	_, _, err := dumpLocks(t, DumpOptions{}, a, b, c)
	if err == nil {
		t.Fatal("locks dumped without -l")
	}
	for _, want := range []string{"holds an flock write lock on " + path, "-l/--file-locks"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestLocksRoundTrip(t *testing.T) {
	path, a, b, c, release := lockedFile(t)
	dir, ents, err := dumpLocks(t, DumpOptions{FileLocks: true}, a, b, c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := images.ReadAll(dir, filelocksImg, func() *filelock.FileLockEntry { return &filelock.FileLockEntry{} })
	if err != nil {
		t.Fatal(err)
	}
	var descr []string
	for _, e := range got {
		descr = append(descr, describeEntry(e))
	}
	// The dup b shows a's locks again: recorded once.
	want := []string{"an flock write lock", "a POSIX read lock (bytes 0-4)", "a POSIX write lock (bytes 100-EOF)", "an OFD write lock (bytes 10-19)"}
	if strings.Join(descr, ", ") != strings.Join(want, ", ") {
		t.Fatalf("filelocks.img holds %q, want %q", descr, want)
	}

	files := map[uint32]*fdinfo.FileEntry{}
	fes, err := images.ReadAll(dir, "files.img", func() *fdinfo.FileEntry { return &fdinfo.FileEntry{} })
	if err != nil {
		t.Fatal(err)
	}
	for _, fe := range fes {
		files[fe.GetId()] = fe
	}
	if _, err := NewRestorer(RestoreOptions{}, dir, files, nil).locksOf(os.Getpid()); err == nil || !strings.Contains(err.Error(), "-l/--file-locks") {
		t.Errorf("restore without -l: %v", err)
	}
	r := NewRestorer(RestoreOptions{FileLocks: true}, dir, files, nil)
	locks, err := r.locksOf(os.Getpid())
	if err != nil || len(locks) != 4 {
		t.Fatalf("LocksOf: %d locks, %v", len(locks), err)
	}
	// The dumped ones go away with the files; the restorer takes the
	// flock and the OFD lock on its own open files.
	release()
	ids := map[int32]uint32{}
	for _, e := range ents {
		ids[int32(e.GetFd())] = e.GetId()
	}
	for _, l := range locks {
		if !isPosixLock(l) {
			if err := r.lockFile(ids[l.GetFd()], l); err != nil {
				t.Fatal(err)
			}
		}
	}
	other, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(other)
	if err := unix.Flock(other, unix.LOCK_SH|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Errorf("flock of another open file: %v, want EWOULDBLOCK", err)
	}
	fl := unix.Flock_t{Type: unix.F_RDLCK, Start: 0, Len: 0}
	if err := unix.FcntlFlock(uintptr(other), unix.F_OFD_GETLK, &fl); err != nil || fl.Type != unix.F_WRLCK || fl.Start != 10 || fl.Len != 10 {
		t.Errorf("F_OFD_GETLK: %+v, %v", fl, err)
	}
	// Taken again while held: an error that names the lock and file.
	err = r.lockFile(ids[int32(c)], &filelock.FileLockEntry{Flag: proto.Uint32(flFlock), Type: proto.Uint32(unix.F_WRLCK), Pid: proto.Int32(1), Fd: proto.Int32(int32(c))})
	if err == nil || !strings.Contains(err.Error(), "another process holds a conflicting lock") || !strings.Contains(err.Error(), path) {
		t.Errorf("conflicting flock: %v", err)
	}
	r.Close()
	if err := unix.Flock(other, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Errorf("the restorer's locks outlive it: %v", err)
	}
}

func TestLocksBadImage(t *testing.T) {
	good := func() *filelock.FileLockEntry {
		return &filelock.FileLockEntry{Flag: proto.Uint32(flPosix), Type: proto.Uint32(unix.F_RDLCK), Pid: proto.Int32(10),
			Fd: proto.Int32(3), Start: proto.Int64(0), Len: proto.Int64(0)}
	}
	for name, damage := range map[string]func(*filelock.FileLockEntry){
		"lease of a range": func(e *filelock.FileLockEntry) { e.Flag, e.Start = proto.Uint32(flLease), proto.Int64(5) },
		"breaking write lease": func(e *filelock.FileLockEntry) {
			e.Flag, e.Type = proto.Uint32(flLease), proto.Uint32(unix.F_WRLCK|leaseBreaking)
		},
		"lease of type 3": func(e *filelock.FileLockEntry) { e.Flag, e.Type = proto.Uint32(flLease), proto.Uint32(3) },
		"unknown flag":    func(e *filelock.FileLockEntry) { e.Flag = proto.Uint32(3) },
		"unlock type":     func(e *filelock.FileLockEntry) { e.Type = proto.Uint32(unix.F_UNLCK) },
		"LOCK_MAND":       func(e *filelock.FileLockEntry) { e.Type = proto.Uint32(32 | 64) },
		"negative start":  func(e *filelock.FileLockEntry) { e.Start = proto.Int64(-1) },
		"negative len":    func(e *filelock.FileLockEntry) { e.Len = proto.Int64(-5) },
		"pid 0":           func(e *filelock.FileLockEntry) { e.Pid = proto.Int32(0) },
		"negative fd":     func(e *filelock.FileLockEntry) { e.Fd = proto.Int32(-1) },
	} {
		dir, err := images.Create(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		e := good()
		damage(e)
		if err := dir.Write(filelocksImg, good(), e); err != nil {
			t.Fatal(err)
		}
		_, err = NewRestorer(RestoreOptions{FileLocks: true}, dir, nil, nil).locksOf(10)
		if !errors.Is(err, images.ErrCorrupt) || !strings.Contains(err.Error(), "entry 1") {
			t.Errorf("%s: %v, want a corrupt-image error naming entry 1", name, err)
		}
	}
}

func TestPosixLockArg(t *testing.T) {
	b := posixLockArg(&filelock.FileLockEntry{Type: proto.Uint32(unix.F_WRLCK), Start: proto.Int64(4096), Len: proto.Int64(0x1234)})
	if len(b) != 32 {
		t.Fatalf("struct flock is %d bytes, want 32", len(b))
	}
	le := binary.LittleEndian
	if le.Uint16(b[0:]) != unix.F_WRLCK || le.Uint16(b[2:]) != unix.SEEK_SET || le.Uint64(b[8:]) != 4096 || le.Uint64(b[16:]) != 0x1234 || le.Uint32(b[24:]) != 0 {
		t.Errorf("struct flock %x", b)
	}
}

// TestLeaseDump: a read lease, a write lease with F_SETSIG, and a write
// lease being broken to F_UNLCK by an open for writing, as criu records
// them (flag 8, type, LEASE_BREAKING 4), with the owner the lease made.
func TestLeaseDump(t *testing.T) {
	dir := t.TempDir()
	open := func(name string, flags int) int {
		fd, err := unix.Open(filepath.Join(dir, name), flags|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		return fd
	}
	lease := func(fd, typ int) {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, typ); err != nil {
			t.Fatalf("F_SETLEASE %d on fd %d: %v", typ, fd, err)
		}
	}
	// The break signal comes to this process: ignore the default SIGIO.
	signal.Ignore(unix.SIGIO)
	rd, wr, brk := open("rd", unix.O_RDONLY), open("wr", unix.O_RDWR), open("brk", unix.O_RDWR)
	// A lease makes its taker's thread the owner, unless the file has one
	// already; F_GETOWN_EX shows 0 for a thread that leads no thread group
	// (a Go test runs on any thread). So the owner is set first, to the
	// process, and the lease must leave it.
	for _, fd := range []int{rd, wr, brk} {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETOWN, os.Getpid()); err != nil {
			t.Fatal(err)
		}
	}
	lease(rd, unix.F_RDLCK)
	if _, err := unix.FcntlInt(uintptr(wr), unix.F_SETSIG, 40); err != nil {
		t.Fatal(err)
	}
	lease(wr, unix.F_WRLCK)
	lease(brk, unix.F_WRLCK)
	if _, err := unix.Open(filepath.Join(dir, "brk"), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("open of a leased file: %v, want EWOULDBLOCK", err)
	}
	t.Cleanup(func() { lease(brk, unix.F_UNLCK) })

	_, _, err := dumpLocks(t, DumpOptions{}, rd)
	if err == nil || !strings.Contains(err.Error(), "holds a read lease on "+filepath.Join(dir, "rd")) {
		t.Errorf("lease dumped without -l: %v", err)
	}
	img, _, err := dumpLocks(t, DumpOptions{FileLocks: true}, rd, wr, brk)
	if err != nil {
		t.Fatal(err)
	}
	got, err := images.ReadAll(img, filelocksImg, func() *filelock.FileLockEntry { return &filelock.FileLockEntry{} })
	if err != nil {
		t.Fatal(err)
	}
	var descr []string
	for _, e := range got {
		descr = append(descr, fmt.Sprintf("flag %d type %d fd %d start %d len %d: %s", e.GetFlag(), e.GetType(), e.GetFd(), e.GetStart(), e.GetLen(), describeEntry(e)))
	}
	want := []string{
		fmt.Sprintf("flag 8 type 0 fd %d start 0 len 0: a read lease", rd),
		fmt.Sprintf("flag 8 type 1 fd %d start 0 len 0: a write lease", wr),
		fmt.Sprintf("flag 8 type 6 fd %d start 0 len 0: a lease being broken to F_UNLCK", brk),
	}
	if strings.Join(descr, "\n") != strings.Join(want, "\n") {
		t.Errorf("filelocks.img:\n%s\nwant\n%s", strings.Join(descr, "\n"), strings.Join(want, "\n"))
	}
	fes, err := images.ReadAll(img, "files.img", func() *fdinfo.FileEntry { return &fdinfo.FileEntry{} })
	if err != nil {
		t.Fatal(err)
	}
	var owners []fileOwner
	for _, fe := range fes {
		o, _ := ownerOf(fe)
		owners = append(owners, o)
	}
	pid := os.Getpid()
	// A lease sets O_ASYNC on its file (the kernel registers the break's
	// SIGIO as for O_ASYNC), so the flags say so too.
	wantOwners := []fileOwner{{Type: 1, Pid: pid, Async: true}, {Signum: 40, Type: 1, Pid: pid, Async: true}, {Type: 1, Pid: pid, Async: true}}
	if !reflect.DeepEqual(owners, wantOwners) {
		t.Errorf("owners %+v, want %+v", owners, wantOwners)
	}
	r := NewRestorer(RestoreOptions{FileLocks: true}, img, nil, nil)
	if locks, err := r.locksOf(pid); err != nil || len(locks) != 3 {
		t.Errorf("LocksOf: %d, %v", len(locks), err)
	}
}
