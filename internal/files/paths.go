package files

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/images"
)

// Paths from images. A restore runs as root from images anyone may have
// written, so every path an entry of files.img names is checked once,
// when the images are read (CheckPaths), and every file the restore
// creates is created in a directory reached without symbolic links
// (CreateDirOK). Names of images are built from numbers and checked by
// images.Dir; terminals are opened by their index, memfds made by name
// with memfd_create: neither is a path.

// CheckPaths refuses an entry of files.img whose paths the restore must
// not follow (images.CheckPath): a regular file, FIFO or ghost (they
// share the regular-file entry), a unix socket's bind path, the files
// inotify and fanotify watch.
func CheckPaths(fe *fdinfo.FileEntry) error {
	check := func(what, p string, rel bool) error {
		if err := images.CheckPath(p, rel); err != nil {
			return fmt.Errorf("file id %d (%s): %w", fe.GetId(), what, err)
		}
		return nil
	}
	if rf := fe.GetReg(); rf != nil {
		if err := check("regular file", rf.GetName(), false); err != nil {
			return err
		}
	}
	if ue := fe.GetUsk(); ue != nil {
		name := ue.GetName()
		if len(name) > 0 && name[0] != 0 {
			// The bind path ends at its first NUL, as unix sockets' do.
			path, _, _ := strings.Cut(string(name), "\x00")
			if path != "" && path[0] != '/' {
				// Relative to the directory it was bound in.
				if err := check("unix socket directory", ue.GetNameDir(), false); err != nil {
					return err
				}
			}
			if err := check("unix socket", path, true); err != nil {
				return err
			}
		}
	}
	if ify := fe.GetIfy(); ify != nil {
		for _, wd := range ify.GetWd() {
			if p := wd.GetFHandle().GetPath(); p != "" {
				if err := check("inotify watch", p, true); err != nil {
					return err
				}
			}
		}
	}
	if ffy := fe.GetFfy(); ffy != nil {
		for _, m := range ffy.GetMark() {
			if p := m.GetIe().GetFHandle().GetPath(); p != "" {
				if err := check("fanotify inode mark", p, true); err != nil {
					return err
				}
			}
			if p := m.GetMe().GetPath(); p != "" {
				if err := check("fanotify mount mark", p, true); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// CreateDirOK refuses to create path unless its directory is reached
// without a symbolic link. Dumped paths are canonical (the kernel's), so
// a link on the way appeared since the dump: a user who can write to
// /tmp could otherwise point /tmp/x at /etc and have a restore running
// as root make, chmod or chown files there. Checked just before each
// creation; the creation itself goes by path, so a link swapped in
// between the two is not caught.
func CreateDirOK(path string) error {
	dir := filepath.Dir(path)
	at, rel, resolve := unix.AT_FDCWD, dir, uint64(0)
	if loc := procRoot.FindStringIndex(dir); loc != nil {
		// A path of a restored mount namespace: the link to its root
		// is stasis' own; what is below it is checked inside it.
		root := strings.TrimSuffix(dir[:loc[1]], "/")
		rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return &os.PathError{Op: "open", Path: root, Err: err}
		}
		defer unix.Close(rfd)
		at, rel, resolve = rfd, "."+dir[len(root):], unix.RESOLVE_IN_ROOT
	}
	fd, err := unix.Openat2(at, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | resolve,
	})
	if err == nil {
		unix.Close(fd)
		return nil
	}
	if errors.Is(err, unix.ELOOP) {
		real, rerr := filepath.EvalSymlinks(dir)
		if rerr != nil {
			real = "?"
		}
		return fmt.Errorf("create %s: its directory %s goes through a symbolic link (to %s), which the dump did not: %w", path, dir, real, images.ErrUnsafePath)
	}
	// A missing directory is for the caller to handle (ghost parents are
	// made again); report other errors as they are.
	return &os.PathError{Op: "openat2", Path: dir, Err: err}
}

// linkRemapName is the name --link-remap gives its hard links (criu's
// link_remap.N); a restore removes that file once it succeeded, so an
// entry naming any other file is refused.
var linkRemapName = regexp.MustCompile(`^link_remap\.[0-9]+$`)
