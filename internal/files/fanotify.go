package files

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fsnotify"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/proc"
)

func init() {
	Register(&Kind{Name: "fanotify", Type: fdinfo.FdTypes_FANOTIFY, Dump: dumpFanotify, Open: openFanotify})
}

// A fanotify fd is its group (the flags of fanotify_init and the open
// flags of the fds its events carry) and its marks: on inodes, reopened
// like inotify watches (fsnotify.go), and on mounts, found again by their
// mount point. Events queued but not read at dump time are lost, as with
// criu.

// fanotifyPermEvents are the events a listener must answer
// (include/uapi/linux/fanotify.h). A mark asking for them is refused: the
// frozen listener could not answer, and every access to the marked files
// (stasis' own, writing the images, included) would block.
const fanotifyPermEvents = unix.FAN_ACCESS_PERM | unix.FAN_OPEN_PERM | unix.FAN_OPEN_EXEC_PERM | unix.FAN_PRE_ACCESS

// fanotifyMarkFlags are the mark flags fdinfo shows
// (fanotify_mark_user_flags, fs/notify/fanotify/fanotify.h).
const fanotifyMarkFlags = unix.FAN_MARK_IGNORED_SURV_MODIFY | unix.FAN_MARK_EVICTABLE | unix.FAN_MARK_IGNORE

func dumpFanotify(_ *Table, fd *Fd) (*fdinfo.FileEntry, error) {
	e, err := parseFanotify(fd.Info)
	if err != nil {
		return nil, err
	}
	e.Id, e.Flags, e.Fown = proto.Uint32(fd.ID), proto.Uint32(anonFlags(fd.Info)), AnonFown()
	self, err := selfMounts()
	if err != nil {
		return nil, err
	}
	var mounts []proc.Mount // the task's
	for _, m := range e.Mark {
		m.Id = proto.Uint32(fd.ID)
		if p := m.GetMask() & fanotifyPermEvents; p != 0 {
			return nil, &UnsupportedError{Pid: fd.Pid, Fd: fd.Num, Kind: "fanotify with permission events", Target: fd.Target,
				Hint: fmt.Sprintf("a mark asks for events %#x, which the frozen listener could not answer", p)}
		}
		switch m.GetType() {
		case fsnotify.MarkType_INODE:
			ie := m.GetIe()
			if ie.FHandle == nil {
				return nil, &UnsupportedError{Pid: fd.Pid, Fd: fd.Num, Kind: "fanotify", Target: fd.Target,
					Hint: fmt.Sprintf("a mark is on a file (device %s, inode %d) of a filesystem without file handles",
						kdevString(m.GetSDev()), ie.GetIIno())}
			}
			path, err := watcheePath(self, m.GetSDev(), ie.GetIIno(), ie.FHandle)
			if err != nil {
				return nil, fmt.Errorf("mark on device %s, inode %d: %w", kdevString(m.GetSDev()), ie.GetIIno(), err)
			}
			ie.FHandle.Path = proto.String(path)
		case fsnotify.MarkType_MOUNT:
			if mounts == nil {
				if mounts, err = proc.ReadMountinfo(fd.Pid); err != nil {
					return nil, err
				}
			}
			mnt := findMount(mounts, m.GetMe().GetMntId())
			if mnt == nil {
				return nil, fmt.Errorf("mark on mount %d, which is not in /proc/%d/mountinfo", m.GetMe().GetMntId(), fd.Pid)
			}
			// As criu does without a mount namespace: the mount point,
			// from the root, and the device, which fdinfo does not print.
			m.Me.Path = proto.String(mnt.MountPoint)
			m.SDev = proto.Uint32(kdev(mnt.Major, mnt.Minor))
		}
	}
	return &fdinfo.FileEntry{Type: fdinfo.FdTypes_FANOTIFY.Enum(), Id: proto.Uint32(fd.ID), Ffy: e}, nil
}

func findMount(mounts []proc.Mount, id uint32) *proc.Mount {
	for i := range mounts {
		if uint64(mounts[i].ID) == uint64(id) {
			return &mounts[i]
		}
	}
	return nil
}

// parseFanotify reads a fanotify fdinfo (fanotify_show_fdinfo and
// fanotify_fdinfo, fs/notify/fdinfo.c):
//
//	fanotify flags:%x event-flags:%x
//	fanotify ino:%lx sdev:%x mflags:%x mask:%x ignored_mask:%x fhandle-bytes:%x fhandle-type:%x f_handle:%*phN
//	fanotify mnt_id:%x mflags:%x mask:%x ignored_mask:%x
//
// into an entry with Faflags, Evflags and the marks, Id, Flags and Fown
// unset. An inode mark on a filesystem without file handles has a nil
// FHandle. A filesystem mark ("fanotify sdev:%x mflags:..."), which
// criu's images cannot hold, or a mark of a kind unknown here is an error
// wrapping ErrUnsupported.
func parseFanotify(fi *proc.Fdinfo) (*fsnotify.FanotifyFileEntry, error) {
	e := &fsnotify.FanotifyFileEntry{}
	for _, line := range fi.Lines {
		if !strings.HasPrefix(line, "fanotify ") {
			continue
		}
		f, err := markFields(line, "fanotify")
		if err != nil {
			return nil, err
		}
		if _, ok := f["event-flags"]; ok {
			if e.Faflags != nil {
				return nil, malformed("fanotify flags twice")
			}
			fl, err := hexField(f, line, "flags", 32)
			if err != nil {
				return nil, err
			}
			ev, err := hexField(f, line, "event-flags", 32)
			if err != nil {
				return nil, err
			}
			e.Faflags, e.Evflags = proto.Uint32(uint32(fl)), proto.Uint32(uint32(ev))
			continue
		}
		m, err := parseFanotifyMark(f, line)
		if err != nil {
			return nil, err
		}
		e.Mark = append(e.Mark, m)
	}
	if e.Faflags == nil {
		return nil, malformed("no \"fanotify flags:\" line")
	}
	return e, nil
}

func parseFanotifyMark(f map[string]string, line string) (*fsnotify.FanotifyMarkEntry, error) {
	m := &fsnotify.FanotifyMarkEntry{}
	var v [3]uint64
	var err error
	for i, k := range []string{"mflags", "mask", "ignored_mask"} {
		if v[i], err = hexField(f, line, k, 32); err != nil {
			return nil, err
		}
	}
	m.Mflags, m.Mask, m.IgnoredMask = proto.Uint32(uint32(v[0])), proto.Uint32(uint32(v[1])), proto.Uint32(uint32(v[2]))
	_, isInode := f["ino"]
	_, isMount := f["mnt_id"]
	switch {
	case isInode:
		ino, err := hexField(f, line, "ino", 64)
		if err != nil {
			return nil, err
		}
		sdev, err := hexField(f, line, "sdev", 32)
		if err != nil {
			return nil, err
		}
		h, _, err := parseHandle(f, line)
		if err != nil {
			return nil, err
		}
		m.Type, m.SDev = fsnotify.MarkType_INODE.Enum(), proto.Uint32(uint32(sdev))
		m.Ie = &fsnotify.FanotifyInodeMarkEntry{IIno: proto.Uint64(ino), FHandle: h}
	case isMount:
		id, err := hexField(f, line, "mnt_id", 31)
		if err != nil {
			return nil, err
		}
		m.Type, m.SDev = fsnotify.MarkType_MOUNT.Enum(), proto.Uint32(0)
		m.Me = &fsnotify.FanotifyMountMarkEntry{MntId: proto.Uint32(uint32(id))}
	case f["sdev"] != "":
		sdev, err := hexField(f, line, "sdev", 32)
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("a filesystem-wide mark (FAN_MARK_FILESYSTEM) on device %s, which criu's images cannot hold: %w",
			kdevString(uint32(sdev)), ErrUnsupported)
	default:
		return nil, fmt.Errorf("a mark of an unknown kind (%q): %w", line, ErrUnsupported)
	}
	return m, nil
}

// openFanotify creates a fanotify group with the flags of the entry and
// adds its marks. The group is created by stasis, which must be allowed
// to (CAP_SYS_ADMIN, as the dumped program was).
func openFanotify(_ *Restorer, fe *fdinfo.FileEntry) (*os.File, error) {
	e := fe.GetFfy()
	if fe.GetType() != fdinfo.FdTypes_FANOTIFY || e == nil {
		return nil, NotKind(fe, "a fanotify")
	}
	// The group's flags as dumped: FAN_CLOEXEC is one of them (fdinfo
	// shows it), so stasis' copy is made close-on-exec by fcntl instead.
	flags := uint(e.GetFaflags())
	fd, err := unix.FanotifyInit(flags, uint(e.GetEvflags()))
	if err != nil {
		return nil, fmt.Errorf("reopen fanotify file id %d: %w", fe.GetId(),
			os.NewSyscallError(fmt.Sprintf("fanotify_init(%#x, %#x)", flags, e.GetEvflags()), err))
	}
	unix.CloseOnExec(fd)
	// FAN_NONBLOCK stays in the group's flags, as dumped, but the file
	// must be blocking when wrapped (NewAnonFile); AnonSetfl sets the
	// entry's status flags afterwards.
	if flags&unix.FAN_NONBLOCK != 0 {
		if err := clearNonblock(fd); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("reopen fanotify file id %d: %w", fe.GetId(), err)
		}
	}
	f := NewAnonFile(fd, "anon_inode:[fanotify]")
	mounts, err := selfMounts()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("reopen fanotify file id %d: %w", fe.GetId(), err)
	}
	// Added oldest first: fdinfo lists the newest first, and shows them in
	// the same order again.
	marks := e.GetMark()
	for i := len(marks) - 1; i >= 0; i-- {
		if err := addFanotifyMark(fd, mounts, marks[i]); err != nil {
			f.Close()
			return nil, fmt.Errorf("reopen fanotify file id %d: mark %d: %w", fe.GetId(), i, err)
		}
	}
	if err := AnonSetfl(fd, e.GetFlags()); err != nil {
		f.Close()
		return nil, fmt.Errorf("reopen fanotify file id %d: %w", fe.GetId(), err)
	}
	return f, nil
}

func clearNonblock(fd int) error {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return os.NewSyscallError("fcntl F_GETFL", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl&^unix.O_NONBLOCK); err != nil {
		return os.NewSyscallError("fcntl F_SETFL", err)
	}
	return nil
}

// addFanotifyMark adds mark m to fanotify fd: its mask, then its ignored
// mask, each with the mark flags it was given (the ignore flags only with
// the ignored mask).
func addFanotifyMark(fd int, mounts []proc.Mount, m *fsnotify.FanotifyMarkEntry) error {
	if m.GetMflags()&^fanotifyMarkFlags != 0 {
		return fmt.Errorf("mark flags %#x: %w", m.GetMflags(), images.ErrCorrupt)
	}
	if m.GetMask()&fanotifyPermEvents != 0 {
		return fmt.Errorf("mask %#x asks for permission events: %w", m.GetMask(), ErrUnsupported)
	}
	var target *os.File
	flags := uint(unix.FAN_MARK_ADD) | uint(m.GetMflags()&unix.FAN_MARK_EVICTABLE)
	switch m.GetType() {
	case fsnotify.MarkType_INODE:
		ie := m.GetIe()
		if ie.GetFHandle() == nil {
			return fmt.Errorf("inode mark without a file handle: %w", images.ErrCorrupt)
		}
		var err error
		if target, err = openWatchee(mounts, m.GetSDev(), ie.GetIIno(), ie.GetFHandle()); err != nil {
			return err
		}
	case fsnotify.MarkType_MOUNT:
		var err error
		if target, err = openMountMark(mounts, m.GetMe()); err != nil {
			return err
		}
		flags |= unix.FAN_MARK_MOUNT
	default:
		return fmt.Errorf("mark of type %v: %w", m.GetType(), images.ErrCorrupt)
	}
	defer target.Close()
	if mask := m.GetMask(); mask != 0 {
		if err := unix.FanotifyMark(fd, flags, uint64(mask), unix.AT_FDCWD, procPath(target)); err != nil {
			return fmt.Errorf("on %s, mask %#x: %w", target.Name(), mask, os.NewSyscallError("fanotify_mark", err))
		}
	}
	if ign := m.GetIgnoredMask(); ign != 0 {
		iflags := flags | uint(m.GetMflags()&unix.FAN_MARK_IGNORED_SURV_MODIFY)
		if m.GetMflags()&unix.FAN_MARK_IGNORE != 0 {
			iflags |= unix.FAN_MARK_IGNORE
		} else {
			iflags |= unix.FAN_MARK_IGNORED_MASK
		}
		if err := unix.FanotifyMark(fd, iflags, uint64(ign), unix.AT_FDCWD, procPath(target)); err != nil {
			return fmt.Errorf("on %s, ignored mask %#x: %w", target.Name(), ign, os.NewSyscallError("fanotify_mark", err))
		}
	}
	return nil
}

// openMountMark opens the root of the mount of a mount mark: by the path
// the dump saw, or, in an image without one (criu with a mount
// namespace), by its mount id in stasis' own namespace. It must still be
// a mount point.
func openMountMark(mounts []proc.Mount, me *fsnotify.FanotifyMountMarkEntry) (*os.File, error) {
	path := me.GetPath()
	if path == "" {
		mnt := findMount(mounts, me.GetMntId())
		if mnt == nil {
			return nil, fmt.Errorf("mount %d of a mount mark is gone", me.GetMntId())
		}
		path = mnt.MountPoint
	} else if !strings.HasPrefix(path, "/") {
		path = "/" + path // criu writes it from the root, without the slash
	}
	if _, err := mountAt(path); err != nil {
		return nil, fmt.Errorf("mount mark on %s (mount %d): %w", path, me.GetMntId(), err)
	}
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("mount mark on %s: %w", path, os.NewSyscallError("open", err))
	}
	return os.NewFile(uintptr(fd), path+" (mount "+strconv.Itoa(int(me.GetMntId()))+")"), nil
}
