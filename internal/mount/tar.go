package mount

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/images"
)

// The contents of a tmpfs are a gzip'ed tar archive of its root, as
// criu writes with GNU tar (--numeric-owner, names "./..."): criu's
// restore extracts stasis' archives and stasis criu's.

// dumpTmpfs archives the tree at root (one file system: mounts on top
// are not in it) into the raw image name.
func dumpTmpfs(dir *images.Dir, root, name string) (err error) {
	f, err := dir.CreateRaw(name)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	links := map[[2]uint64]string{} // hard links: the first name of each inode
	// The slash: root is a magic link (/proc/self/fd/N), walked into.
	root += "/"
	var dev uint64
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		name := "./" + filepath.ToSlash(rel)
		if rel == "." {
			name = "./"
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("%s: %w", name, os.NewSyscallError("lstat", err))
		}
		if rel == "." {
			dev = st.Dev
		} else if st.Dev != dev {
			return fs.SkipDir // another mount on top: one file system only
		}
		h := &tar.Header{
			Name: name, Mode: int64(st.Mode & 0o7777), Uid: int(st.Uid), Gid: int(st.Gid),
			ModTime: time.Unix(st.Mtim.Unix()), Format: tar.FormatGNU,
		}
		key := [2]uint64{st.Dev, st.Ino}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			h.Typeflag = tar.TypeDir
			if !strings.HasSuffix(h.Name, "/") {
				h.Name += "/"
			}
		case unix.S_IFREG:
			if first, ok := links[key]; ok && st.Nlink > 1 {
				h.Typeflag, h.Linkname = tar.TypeLink, first
				break
			}
			links[key] = name
			h.Typeflag, h.Size = tar.TypeReg, st.Size
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			h.Typeflag, h.Linkname = tar.TypeSymlink, target
		case unix.S_IFCHR, unix.S_IFBLK:
			h.Typeflag = tar.TypeChar
			if st.Mode&unix.S_IFMT == unix.S_IFBLK {
				h.Typeflag = tar.TypeBlock
			}
			h.Devmajor, h.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
		case unix.S_IFIFO:
			h.Typeflag = tar.TypeFifo
		default:
			return nil // a socket: GNU tar skips it too
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if h.Typeflag == tar.TypeReg && h.Size > 0 {
			src, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.CopyN(tw, src, h.Size)
			src.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// restoreTmpfs extracts the raw image r into the directory target (the
// fresh tmpfs), every name resolved inside it: an archive cannot write
// outside the tmpfs, through ".." or a symbolic link it made. Modes,
// owners and times are set as archived.
func restoreTmpfs(r io.Reader, target, name string) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("image %s: %w: %w", name, images.ErrCorrupt, err)
	}
	rootFd, err := unix.Open(target, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("tmpfs at %s: %w", target, os.NewSyscallError("open", err))
	}
	defer unix.Close(rootFd)
	type dirTimes struct {
		rel string
		t   time.Time
	}
	var dirs []dirTimes
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("image %s: %w: %w", name, images.ErrCorrupt, err)
		}
		rel := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if rel == "" || rel == "." || rel == "/" {
			rel = "."
		}
		if strings.HasPrefix(rel, "../") || rel == ".." || strings.HasPrefix(rel, "/") {
			return fmt.Errorf("image %s: entry %q names a file outside the tmpfs: %w", name, h.Name, images.ErrUnsafePath)
		}
		if err := extract(rootFd, rel, h, tr); err != nil {
			return fmt.Errorf("image %s: %s: %w", name, h.Name, err)
		}
		if h.Typeflag == tar.TypeDir {
			dirs = append(dirs, dirTimes{rel, h.ModTime})
		}
	}
	// Directory times last: extracting into a directory changes them.
	for _, d := range dirs {
		ts := []unix.Timespec{unix.NsecToTimespec(d.t.UnixNano()), unix.NsecToTimespec(d.t.UnixNano())}
		_ = unix.UtimesNanoAt(rootFd, d.rel, ts, unix.AT_SYMLINK_NOFOLLOW)
	}
	return nil
}

// extract makes one archive entry at rel below the directory rootFd.
func extract(rootFd int, rel string, h *tar.Header, r io.Reader) error {
	parent, base := path.Split(rel)
	if parent == "" {
		parent = "."
	}
	pfd, err := unix.Openat2(rootFd, parent, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return os.NewSyscallError("openat2 "+parent, err)
	}
	defer unix.Close(pfd)
	mode := uint32(h.Mode & 0o7777)
	if rel == "." {
		base = "."
	}
	switch h.Typeflag {
	case tar.TypeDir:
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			return os.NewSyscallError("mkdir", err)
		}
	case tar.TypeReg:
		fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return os.NewSyscallError("create", err)
		}
		f := os.NewFile(uintptr(fd), base)
		_, err = io.Copy(f, r)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case tar.TypeLink:
		old := path.Clean(strings.TrimPrefix(h.Linkname, "./"))
		if strings.HasPrefix(old, "../") || strings.HasPrefix(old, "/") {
			return fmt.Errorf("hard link to %q outside the tmpfs: %w", h.Linkname, images.ErrUnsafePath)
		}
		return os.NewSyscallError("linkat", unix.Linkat(rootFd, old, pfd, base, 0))
	case tar.TypeSymlink:
		if err := unix.Symlinkat(h.Linkname, pfd, base); err != nil {
			return os.NewSyscallError("symlink", err)
		}
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		kind := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[h.Typeflag]
		dev := unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor))
		if err := unix.Mknodat(pfd, base, kind|0o600, int(dev)); err != nil {
			return os.NewSyscallError("mknod", err)
		}
	default:
		return nil // GNU tar's extra headers: nothing to make
	}
	if err := unix.Fchownat(pfd, base, h.Uid, h.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return os.NewSyscallError("chown", err)
	}
	if h.Typeflag != tar.TypeSymlink {
		if err := unix.Fchmodat(pfd, base, mode, 0); err != nil {
			return os.NewSyscallError("chmod", err)
		}
		ts := []unix.Timespec{unix.NsecToTimespec(h.ModTime.UnixNano()), unix.NsecToTimespec(h.ModTime.UnixNano())}
		_ = unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW)
	}
	return nil
}
