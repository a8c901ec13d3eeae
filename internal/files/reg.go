package files

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/linux"
)

// Regular files, directories and the /dev/null family: reopened by path
// with their flags and offset, checked to be the file that was dumped.
// A file whose name is gone is remapped (remap.go).

func init() {
	Register(&Kind{Name: "reg", Type: fdinfo.FdTypes_REG, Dump: dumpReg, Write: writeRemaps, Open: openReg})
}

func regEntry(path string, flags uint32, pos uint64, st *unix.Stat_t) *fdinfo.FileEntry {
	e := &regfile.RegFileEntry{
		Flags: proto.Uint32(flags),
		Pos:   proto.Uint64(pos),
		Fown: &fown.FownEntry{
			Uid: proto.Uint32(0), Euid: proto.Uint32(0), Signum: proto.Uint32(0),
			PidType: proto.Uint32(0), Pid: proto.Uint32(0),
		},
		Name: proto.String(path),
		Mode: proto.Uint32(st.Mode),
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG && checkSize(flags) {
		e.Size = proto.Uint64(uint64(st.Size))
	}
	return &fdinfo.FileEntry{Type: fdinfo.FdTypes_REG.Enum(), Reg: e}
}

// checkSize says whether the restore checks that a file kept its size:
// not for one only appended to (a log, criu's should_check_size), which
// goes on growing while the dump waits to be restored.
func checkSize(flags uint32) bool {
	return !(flags&unix.O_ACCMODE == unix.O_WRONLY && flags&unix.O_APPEND != 0)
}

// AddPath records a file referenced by path only (cwd or root) and
// returns its id. The same path opened with the same flags gets one
// entry.
func (t *Table) AddPath(path string, flags uint32) (uint32, error) {
	key := strconv.FormatUint(uint64(flags), 8) + ":" + path
	if id, ok := t.paths[key]; ok {
		return id, nil
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	id := t.Add(regEntry(path, flags, 0, &st))
	t.paths[key] = id
	return id, nil
}

// AddLink records the file a magic link opens (/proc/PID/exe,
// /proc/PID/map_files/START-END) and returns its id: by its path as
// AddPath does, or, if its name is gone (a binary replaced while it
// runs, a deleted temporary file still mapped), remapped like an fd of
// the same inode. The entry of an ELF file keeps its build-id for
// --file-validation=buildid.
func (t *Table) AddLink(src string, flags uint32) (uint32, error) {
	target, err := os.Readlink(src)
	if err != nil {
		return 0, err
	}
	var st unix.Stat_t
	if err := unix.Stat(src, &st); err != nil {
		return 0, fmt.Errorf("stat %s (%s): %w", src, target, err)
	}
	if name, _, ok := deadProc(target, &st); ok {
		key := strconv.FormatUint(uint64(flags), 8) + ":" + name
		if id, ok := t.paths[key]; ok {
			return id, nil
		}
		t.remapDeadProc(t.nextID, target, &st)
		id := t.Add(regEntry(name, flags, 0, &st))
		t.paths[key] = id
		return id, nil
	}
	name, gone := t.unlinked(target, &st)
	key := strconv.FormatUint(uint64(flags), 8) + ":" + name
	if gone {
		key = fmt.Sprintf("%o:unlinked %d:%d", flags, st.Dev, st.Ino)
	}
	mnt := -1
	if t.nestedMounts() {
		if mnt, err = mountOf(src); err != nil {
			return 0, err
		}
		key += ":mnt " + strconv.Itoa(mnt)
	}
	if id, ok := t.paths[key]; ok {
		return id, nil
	}
	fe := regEntry(name, flags, 0, &st)
	if err := t.setMount(fe, src, mnt); err != nil {
		return 0, err
	}
	if gone {
		if err := t.remapUnlinked(t.nextID, src, name, &st); err != nil {
			return 0, fmt.Errorf("%s: %w", src, err)
		}
	} else if st.Mode&unix.S_IFMT == unix.S_IFREG {
		id, err := buildID(src)
		if err != nil {
			return 0, fmt.Errorf("build-id of %s: %w", name, err)
		}
		fe.Reg.BuildId = id
	}
	id := t.Add(fe)
	t.paths[key] = id
	return id, nil
}

// AddReg records the regular file entry of path, of stat st, opened with
// flags, and returns its id: criu wants one beside the entry of a kind
// opened by other means (a terminal's path).
func (t *Table) AddReg(path string, flags uint32, st *unix.Stat_t) uint32 {
	return t.Add(regEntry(path, flags, 0, st))
}

func dumpReg(t *Table, fd *Fd) (*fdinfo.FileEntry, error) {
	if name, ok := t.remapDeadProc(fd.ID, fd.Target, &fd.Stat); ok {
		return regEntry(name, fd.Flags(), fd.Info.Pos, &fd.Stat), nil
	}
	name, gone := t.unlinked(fd.Target, &fd.Stat)
	if !gone {
		if err := t.checkDevicePath(fd, name); err != nil {
			return nil, err
		}
	}
	if gone {
		if err := t.remapUnlinked(fd.ID, fd.Path(), name, &fd.Stat); err != nil {
			return nil, err
		}
	}
	fe := regEntry(name, fd.Flags(), fd.Info.Pos, &fd.Stat)
	if err := t.setMount(fe, fd.Path(), fd.Info.MntID); err != nil {
		return nil, err
	}
	return fe, nil
}

// openReg opens a regular-file entry again with its dumped flags and
// offset. The offset lives in the open file description, so the fds
// passed into the tasks share it.
func openReg(r *Restorer, fe *fdinfo.FileEntry) (*os.File, error) {
	rf := fe.GetReg()
	if rf == nil {
		return nil, NotKind(fe, "a regular file")
	}
	name := rf.GetName()
	// fdinfo never shows O_CREAT/O_TRUNC/O_EXCL; strip them anyway so that
	// a damaged image cannot truncate or create files.
	flags := int(rf.GetFlags()) &^ (unix.O_CLOEXEC | unix.O_CREAT | unix.O_TRUNC | unix.O_EXCL | unix.O_NOCTTY | unix.O_ASYNC)
	switch rf.GetMode() & unix.S_IFMT {
	case unix.S_IFDIR:
		flags = unix.O_RDONLY | unix.O_DIRECTORY | (flags &^ unix.O_ACCMODE)
	case unix.S_IFREG:
		// An O_TMPFILE file comes back as a ghost: opened, not made.
		flags &^= unix.O_TMPFILE
	}
	open := func(p string) (*os.File, error) { return openFlags(p, flags) }
	path, remapped, err := r.remapped(fe)
	if err != nil {
		return nil, err
	}
	var f *os.File
	if remapped {
		f, err = openAs(path, r.inRootOf(name, rf.GetMntId()), open)
	} else {
		f, err = open(r.inRootOf(name, rf.GetMntId()))
	}
	if err != nil {
		return nil, fmt.Errorf("reopen file id %d: %w", fe.GetId(), err)
	}
	if err := r.validate(f, fe); err != nil {
		f.Close()
		return nil, err
	}
	// A directory's offset is where getdents goes on (a hash cookie on
	// ext4, an index on tmpfs): both take it back with lseek.
	if m := rf.GetMode() & unix.S_IFMT; rf.GetPos() != 0 && (m == unix.S_IFREG || m == unix.S_IFDIR) {
		if _, err := unix.Seek(int(f.Fd()), int64(rf.GetPos()), 0); err != nil {
			f.Close()
			return nil, fmt.Errorf("seek %s to %d: %w", name, rf.GetPos(), err)
		}
	}
	return f, nil
}

// openFlags opens path with exactly flags (and close-on-exec, which the
// fd table restores). os.OpenFile would not do: it clears O_NONBLOCK on a
// file the runtime poller refuses and sets it on one it takes.
func openFlags(path string, flags int) (*os.File, error) {
	fd, err := linux.Open(path, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EINVAL) && flags&unix.O_DIRECT != 0 {
			return nil, fmt.Errorf("open %s: the file was open with O_DIRECT, which its file system refuses now (%w)", path, errors.Unwrap(err))
		}
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}
