package files

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// Regular files, directories and the /dev/null family: reopened by path
// with their flags and offset.

func init() {
	register(&kind{name: "reg", typ: fdinfo.FdTypes_REG, dump: dumpReg, open: openReg})
}

func regEntry(path string, flags uint32, pos uint64, st *unix.Stat_t) *fdinfo.FileEntry {
	return &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_REG.Enum(),
		Reg: &regfile.RegFileEntry{
			Flags: proto.Uint32(flags),
			Pos:   proto.Uint64(pos),
			Fown: &fown.FownEntry{
				Uid: proto.Uint32(0), Euid: proto.Uint32(0), Signum: proto.Uint32(0),
				PidType: proto.Uint32(0), Pid: proto.Uint32(0),
			},
			Name: proto.String(path),
			Size: proto.Uint64(uint64(st.Size)),
			Mode: proto.Uint32(st.Mode),
		},
	}
}

// AddPath records a file referenced by path only (a mapping, the exe
// link, cwd or root) and returns its id. The same path opened with the
// same flags gets one entry.
func (t *Table) AddPath(path string, flags uint32) (uint32, error) {
	key := strconv.FormatUint(uint64(flags), 8) + ":" + path
	if id, ok := t.paths[key]; ok {
		return id, nil
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	id := t.add(regEntry(path, flags, 0, &st))
	t.paths[key] = id
	return id, nil
}

func dumpReg(t *Table, fd *Fd) (*fdinfo.FileEntry, error) {
	if strings.HasSuffix(fd.Target, " (deleted)") {
		return nil, &UnsupportedError{Pid: fd.Pid, Fd: fd.Num, Kind: "an unlinked file", Target: fd.Target}
	}
	return regEntry(fd.Target, fd.Flags(), fd.Info.Pos, &fd.Stat), nil
}

// openReg opens a regular-file entry again with its dumped flags and
// offset. The offset lives in the open file description, so the fds
// passed into the tasks share it.
func openReg(_ *Restorer, fe *fdinfo.FileEntry) (*os.File, error) {
	r := fe.GetReg()
	if r == nil {
		return nil, notKind(fe, "a regular file")
	}
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
