package files

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fh"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/proc"
)

// What inotify and fanotify share: the mark lines of their fdinfo
// (fs/notify/fdinfo.c) and the file handle that names a watched inode.
//
// A mark is kept on an inode, not on a path: the kernel prints the inode's
// file handle, and the dump adds the path it has in stasis' mount namespace
// (criu's fh_entry.path), so that a restore on the same machine reopens the
// very inode by its handle and a restore elsewhere (or after the file was
// replaced under the same name) falls back to the path.

// markFields splits the mark line "PREFIX k:v k:v ..." into its pairs.
func markFields(line, prefix string) (map[string]string, error) {
	rest, ok := strings.CutPrefix(line, prefix+" ")
	if !ok {
		return nil, malformed("%s line %q does not start with %q", prefix, line, prefix)
	}
	f := map[string]string{}
	for _, tok := range strings.Fields(rest) {
		k, v, ok := strings.Cut(tok, ":")
		if !ok || k == "" || v == "" {
			return nil, malformed("%s line %q: stray %q", prefix, line, tok)
		}
		if _, dup := f[k]; dup {
			return nil, malformed("%s line %q: %s twice", prefix, line, k)
		}
		f[k] = v
	}
	return f, nil
}

// hexField is the hex value of key in a mark line, at most bits wide.
func hexField(f map[string]string, line, key string, bits int) (uint64, error) {
	v, ok := f[key]
	if !ok {
		return 0, malformed("mark %q has no %s", line, key)
	}
	n, err := strconv.ParseUint(v, 16, bits)
	if err != nil {
		return 0, malformed("mark %q: bad %s %q", line, key, v)
	}
	return n, nil
}

// maxHandleSize is MAX_HANDLE_SZ (include/linux/exportfs.h); criu's fh_t
// holds as many bytes, in 16 u64 words (fh_entry_sizes.min_entries).
const maxHandleSize = 128

// parseHandle reads "fhandle-bytes:%x fhandle-type:%x f_handle:%*phN" of
// a mark line (show_mark_fhandle). A filesystem that cannot encode file
// handles prints none: ok is then false.
func parseHandle(f map[string]string, line string) (e *fh.FhEntry, ok bool, err error) {
	if _, has := f["f_handle"]; !has {
		if _, has := f["fhandle-bytes"]; has {
			return nil, false, malformed("mark %q has fhandle-bytes but no f_handle", line)
		}
		return nil, false, nil
	}
	n, err := hexField(f, line, "fhandle-bytes", 32)
	if err != nil {
		return nil, false, err
	}
	typ, err := hexField(f, line, "fhandle-type", 32)
	if err != nil {
		return nil, false, err
	}
	b, err := hex.DecodeString(f["f_handle"])
	if err != nil || uint64(len(b)) != n || n > maxHandleSize {
		return nil, false, malformed("mark %q: f_handle is not %d hex bytes (at most %d)", line, n, maxHandleSize)
	}
	return &fh.FhEntry{Bytes: proto.Uint32(uint32(n)), Type: proto.Uint32(uint32(typ)), Handle: packHandle(b)}, true, nil
}

// packHandle puts the bytes of a handle into criu's 16 words, in memory
// order as criu's fh_t keeps them.
func packHandle(b []byte) []uint64 {
	var buf [maxHandleSize]byte
	copy(buf[:], b)
	w := make([]uint64, maxHandleSize/8)
	for i := range w {
		w[i] = binary.LittleEndian.Uint64(buf[i*8:])
	}
	return w
}

// handleOf is the unix.FileHandle of an image's fh_entry.
func handleOf(e *fh.FhEntry) (unix.FileHandle, error) {
	n := int(e.GetBytes())
	if n == 0 || n > maxHandleSize || len(e.GetHandle())*8 < n {
		return unix.FileHandle{}, fmt.Errorf("file handle of %d bytes in %d words: %w", n, len(e.GetHandle()), images.ErrCorrupt)
	}
	var buf [maxHandleSize]byte
	for i, w := range e.GetHandle()[:(n+7)/8] {
		binary.LittleEndian.PutUint64(buf[i*8:], w)
	}
	return unix.NewFileHandle(int32(e.GetType()), buf[:n]), nil
}

// kdev is a device number as the kernel keeps it in s_dev and prints it
// in fdinfo (MKDEV, include/linux/kdev_t.h): not the encoding of stat's
// st_dev.
func kdev(major, minor uint32) uint32 { return major<<20 | minor&(1<<20-1) }

func kdevString(d uint32) string { return fmt.Sprintf("%d:%d", d>>20, d&(1<<20-1)) }

// selfMounts is stasis' mountinfo, read once per fsnotify fd: read per
// mark, it made an fd with 1000 watches 7-10x slower to dump and reopen
// (117 and 245 ms instead of ~17 and ~25 ms).
func selfMounts() ([]proc.Mount, error) { return proc.ReadMountinfo(os.Getpid()) }

// openHandle opens, O_PATH, the inode named by handle h on the filesystem
// of device sdev, through any of stasis' mounts of that filesystem
// (open_by_handle_at wants an fd on the filesystem; criu does the same).
func openHandle(mounts []proc.Mount, sdev uint32, h *fh.FhEntry) (*os.File, error) {
	fhd, err := handleOf(h)
	if err != nil {
		return nil, err
	}
	err = fmt.Errorf("no mount of device %s", kdevString(sdev))
	for _, m := range mounts {
		if kdev(m.Major, m.Minor) != sdev {
			continue
		}
		// Not O_PATH: open_by_handle_at refuses such an fd.
		mfd, e := unix.Open(m.MountPoint, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if e != nil {
			continue
		}
		fd, e := unix.OpenByHandleAt(mfd, fhd, unix.O_PATH|unix.O_CLOEXEC)
		unix.Close(mfd)
		if e == nil {
			// Named by where it is, for errors.
			name, e := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
			if e != nil {
				name = m.MountPoint
			}
			return os.NewFile(uintptr(fd), name), nil
		}
		err = os.NewSyscallError("open_by_handle_at", e)
	}
	return nil, err
}

// watcheePath returns the path of the inode ino of device sdev, named by
// handle h, as stasis sees it, and checks that the path leads to that
// inode.
func watcheePath(mounts []proc.Mount, sdev uint32, ino uint64, h *fh.FhEntry) (string, error) {
	f, err := openHandle(mounts, sdev, h)
	if err != nil {
		return "", fmt.Errorf("open it by its file handle: %w", err)
	}
	defer f.Close()
	path := f.Name()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil || st.Ino != ino || kdev(unix.Major(st.Dev), unix.Minor(st.Dev)) != sdev {
		return "", fmt.Errorf("it has no path in stasis' mount namespace (%q does not lead to it)", path)
	}
	return path, nil
}

// openWatchee opens, O_PATH, the inode a mark was on: by its handle (the
// very inode, if the restore runs where the dump ran), else by the path
// the dump found for it. The error says why both failed.
func openWatchee(mounts []proc.Mount, sdev uint32, ino uint64, h *fh.FhEntry) (*os.File, error) {
	if _, err := handleOf(h); err != nil {
		return nil, err
	}
	f, herr := openHandle(mounts, sdev, h)
	if herr == nil {
		return f, nil
	}
	path := h.GetPath()
	if path == "" {
		return nil, fmt.Errorf("the watched file (device %s, inode %d) is gone: open by its handle: %w", kdevString(sdev), ino, herr)
	}
	if path[0] != '/' {
		path = "/" + path // from the root, never from stasis' cwd
	}
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("the watched file %s (device %s, inode %d) is gone: open by its handle: %v; open by path: %w",
			path, kdevString(sdev), ino, herr, os.NewSyscallError("open", err))
	}
	return os.NewFile(uintptr(fd), path), nil
}

// procPath is the name of an open file that the kernel resolves to the
// file itself: inotify_add_watch and fanotify_mark take a path, and
// fanotify_mark refuses an O_PATH fd as dirfd.
func procPath(f *os.File) string { return fmt.Sprintf("/proc/self/fd/%d", f.Fd()) }

// mountAt returns the mount whose root is path in stasis' mount
// namespace, or an error if path is not a mount point any more: a mount
// mark put on what is only a directory now would watch the whole mount
// that holds it.
func mountAt(path string) (*proc.Mount, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &stx); err != nil {
		return nil, os.NewSyscallError("statx", err)
	}
	mounts, err := proc.ReadMountinfo(os.Getpid())
	if err != nil {
		return nil, err
	}
	for i := range mounts {
		if uint64(mounts[i].ID) == stx.Mnt_id {
			if filepath.Clean(mounts[i].MountPoint) != filepath.Clean(path) {
				return nil, fmt.Errorf("%s is not a mount point any more (it is in the mount at %s)", path, mounts[i].MountPoint)
			}
			return &mounts[i], nil
		}
	}
	return nil, errors.New("its mount is not in /proc/self/mountinfo")
}
