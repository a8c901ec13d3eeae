package files

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fsnotify"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/proc"
)

func init() {
	Register(&Kind{Name: "inotify", Type: fdinfo.FdTypes_INOTIFY, Dump: dumpInotify, Open: openInotify})
}

// An inotify fd is its watches: each one an inode, a mask and the watch
// descriptor (wd) the program got from inotify_add_watch and compares
// with the wd of every event it reads. The restore gives each watch its
// old wd again.
//
// Events queued but not read at dump time are lost, as with criu: the
// kernel has no way to queue an inotify event by hand. Events that
// happen between dump and restore are not seen either.

// inotifyMaskBits is what fdinfo shows of a watch's mask
// (inotify_mark_user_mask, fs/notify/inotify/inotify_user.c) and
// inotify_add_watch takes back.
const inotifyMaskBits = unix.IN_ALL_EVENTS | unix.IN_ONESHOT | unix.IN_EXCL_UNLINK

func dumpInotify(t *Table, fd *Fd) (*fdinfo.FileEntry, error) {
	wds, err := parseInotify(fd.Info)
	if err != nil {
		return nil, err
	}
	mounts, err := selfMounts()
	if err != nil {
		return nil, err
	}
	for _, w := range wds {
		w.Id = proto.Uint32(fd.ID)
		if w.FHandle == nil {
			return nil, &UnsupportedError{Pid: fd.Pid, Fd: fd.Num, Kind: "inotify", Target: fd.Target,
				Hint: fmt.Sprintf("watch %d is on a file (device %s, inode %d) of a filesystem without file handles",
					w.GetWd(), kdevString(w.GetSDev()), w.GetIIno())}
		}
		path, err := watcheePath(mounts, w.GetSDev(), w.GetIIno(), w.FHandle)
		if err != nil {
			// A file deleted since, still open in the tree: the watch
			// goes on the file that fd gets back (a ghost).
			id, found, terr := t.treeFileByInode(w.GetSDev(), w.GetIIno())
			if terr != nil || !found {
				return nil, fmt.Errorf("watch %d on device %s, inode %d: %w", w.GetWd(), kdevString(w.GetSDev()), w.GetIIno(), err)
			}
			setWatchFile(w, id)
			continue
		}
		w.FHandle.Path = proto.String(path)
	}
	return &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_INOTIFY.Enum(),
		Id:   proto.Uint32(fd.ID),
		Ify: &fsnotify.InotifyFileEntry{
			Id:    proto.Uint32(fd.ID),
			Flags: proto.Uint32(anonFlags(fd.Info)),
			Fown:  AnonFown(),
			Wd:    wds,
		},
	}, nil
}

// parseInotify reads the watches of an inotify fdinfo, one line each
// (inotify_fdinfo, fs/notify/fdinfo.c):
//
//	inotify wd:%x ino:%lx sdev:%x mask:%x ignored_mask:0 fhandle-bytes:%x fhandle-type:%x f_handle:%*phN
//
// in increasing wd order (the kernel prints the newest first). The file
// handle is absent on a filesystem that cannot encode one: FHandle is
// then nil. Id is left unset.
func parseInotify(fi *proc.Fdinfo) ([]*fsnotify.InotifyWdEntry, error) {
	var wds []*fsnotify.InotifyWdEntry
	for _, line := range fi.Lines {
		if !strings.HasPrefix(line, "inotify ") {
			continue
		}
		f, err := markFields(line, "inotify")
		if err != nil {
			return nil, err
		}
		var v [5]uint64
		for i, k := range []struct {
			key  string
			bits int
		}{{"wd", 31}, {"ino", 64}, {"sdev", 32}, {"mask", 32}, {"ignored_mask", 32}} {
			if v[i], err = hexField(f, line, k.key, k.bits); err != nil {
				return nil, err
			}
		}
		if v[0] == 0 {
			return nil, malformed("inotify watch %q: wd 0", line)
		}
		h, _, err := parseHandle(f, line)
		if err != nil {
			return nil, err
		}
		wds = append(wds, &fsnotify.InotifyWdEntry{
			Wd: proto.Uint32(uint32(v[0])), IIno: proto.Uint64(v[1]), SDev: proto.Uint32(uint32(v[2])),
			Mask: proto.Uint32(uint32(v[3])), IgnoredMask: proto.Uint32(uint32(v[4])), FHandle: h,
		})
	}
	slices.SortFunc(wds, func(a, b *fsnotify.InotifyWdEntry) int { return int(a.GetWd()) - int(b.GetWd()) })
	for i := 1; i < len(wds); i++ {
		if wds[i].GetWd() == wds[i-1].GetWd() {
			return nil, malformed("inotify wd %d twice", wds[i].GetWd())
		}
	}
	return wds, nil
}

// openInotify creates an inotify fd with the watches of the entry, each
// with its dumped wd, and its flags. Watches are added in stasis: the
// group and its marks belong to the file, which the task then shares.
func openInotify(r *Restorer, fe *fdinfo.FileEntry) (*os.File, error) {
	e := fe.GetIfy()
	if fe.GetType() != fdinfo.FdTypes_INOTIFY || e == nil {
		return nil, NotKind(fe, "an inotify")
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("reopen inotify file id %d: %w", fe.GetId(), os.NewSyscallError("inotify_init1", err))
	}
	f := NewAnonFile(fd, "anon_inode:inotify")
	mounts, err := selfMounts()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("reopen inotify file id %d: %w", fe.GetId(), err)
	}
	wds := slices.Clone(e.GetWd())
	slices.SortFunc(wds, func(a, b *fsnotify.InotifyWdEntry) int { return int(a.GetWd()) - int(b.GetWd()) })
	for _, w := range wds {
		if err := r.addInotifyWatch(fd, mounts, w); err != nil {
			f.Close()
			return nil, fmt.Errorf("reopen inotify file id %d: %w", fe.GetId(), err)
		}
	}
	if err := AnonSetfl(fd, e.GetFlags()); err != nil {
		f.Close()
		return nil, fmt.Errorf("reopen inotify file id %d: %w", fe.GetId(), err)
	}
	return f, nil
}

// addInotifyWatch adds watch w to inotify fd with its wd: the wd is
// chosen by INOTIFY_IOC_SETNEXTWD, not by criu's old loop of adding and
// removing watches until the counter reaches it, which would queue an
// IN_IGNORED event for the program per removed watch.
func (r *Restorer) addInotifyWatch(fd int, mounts []proc.Mount, w *fsnotify.InotifyWdEntry) error {
	wd := w.GetWd()
	if wd == 0 || wd > math.MaxInt32 {
		return fmt.Errorf("watch with wd %d: %w", wd, images.ErrCorrupt)
	}
	if w.GetFHandle() == nil {
		return fmt.Errorf("watch %d has no file handle: %w", wd, images.ErrCorrupt)
	}
	if id, err := watchFile(w); err != nil {
		return fmt.Errorf("watch %d: file id: %v: %w", wd, err, images.ErrCorrupt)
	} else if id != 0 {
		return r.watchGhost(fd, w, id)
	}
	target, err := openWatchee(mounts, w.GetSDev(), w.GetIIno(), w.GetFHandle())
	if err != nil {
		return fmt.Errorf("watch %d: %w", wd, err)
	}
	defer target.Close()
	return addWatchAt(fd, w, target)
}

// watchGhost adds watch w of inotify fd on the file of id, a file the
// tree holds open that was deleted before the dump (a ghost, made again
// under a temporary name). The removal of that name, when the restore
// ends, takes the file's last link: the kernel drops every inotify watch
// of the file then (IN_IGNORED). So the watch is added after it, the last
// thing the restore does, if it succeeded; events between the tasks'
// start and then are not seen.
func (r *Restorer) watchGhost(fd int, w *fsnotify.InotifyWdEntry, id uint32) error {
	target, err := r.Open(id)
	if err != nil {
		return fmt.Errorf("watch %d: its file id %d: %w", w.GetWd(), id, err)
	}
	// The restorer's files are closed before its end hooks run.
	ify, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
	}
	tf, err := unix.FcntlInt(target.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		unix.Close(ify)
		return os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
	}
	r.atVeryEnd(func() error {
		defer unix.Close(ify)
		f := os.NewFile(uintptr(tf), target.Name())
		defer f.Close()
		if !r.success {
			return nil
		}
		return addWatchAt(ify, w, f)
	})
	return nil
}

// addWatchAt adds watch w to inotify fd on the open file target, with
// its wd.
func addWatchAt(fd int, w *fsnotify.InotifyWdEntry, target *os.File) error {
	wd := w.GetWd()
	// The next watch gets the wd passed (by value), if it is free.
	if err := unix.IoctlSetInt(fd, linux.InotifyIocSetNextWd, int(wd)); err != nil {
		return fmt.Errorf("watch %d on %s: %w (the kernel needs CONFIG_CHECKPOINT_RESTORE)", wd, target.Name(),
			os.NewSyscallError("ioctl INOTIFY_IOC_SETNEXTWD", err))
	}
	mask := w.GetMask() & inotifyMaskBits
	got, err := unix.InotifyAddWatch(fd, procPath(target), mask)
	if err != nil {
		return fmt.Errorf("watch %d on %s (mask %#x): %w", wd, target.Name(), mask, os.NewSyscallError("inotify_add_watch", err))
	}
	if uint32(got) != wd {
		return fmt.Errorf("watch %d on %s: the kernel gave wd %d (one inode watched twice?): %w", wd, target.Name(), got, images.ErrCorrupt)
	}
	return nil
}
