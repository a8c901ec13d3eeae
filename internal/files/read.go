package files

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/memfd"

	"github.com/stasis-cr/stasis/internal/images"
)

// ReadImages reads the file table of a dump, files.img by file id and
// memfd.img by inode id, and checks them before anything is opened or
// created: every path files.img names (CheckPaths, naming the entry's
// offset if one is refused), every memfd's inode.
func ReadImages(dir *images.Dir) (map[uint32]*fdinfo.FileEntry, map[uint32]*memfd.MemfdInodeEntry, error) {
	files, err := readFiles(dir)
	if err != nil {
		return nil, nil, err
	}
	memfds := map[uint32]*memfd.MemfdInodeEntry{}
	if dir.Has("memfd.img") {
		inodes, err := images.ReadAll(dir, "memfd.img", func() *memfd.MemfdInodeEntry { return &memfd.MemfdInodeEntry{} })
		if err != nil {
			return nil, nil, err
		}
		for _, m := range inodes {
			memfds[uint32(m.GetInodeId())] = m
		}
	}
	for _, f := range files {
		if f.GetType() == fdinfo.FdTypes_MEMFD && memfds[f.GetMemfd().GetInodeId()] == nil {
			return nil, nil, inconsistent("files.img", "memfd file id %d refers to inode %d, not in memfd.img", f.GetId(), f.GetMemfd().GetInodeId())
		}
	}
	return files, memfds, nil
}

// readFiles reads files.img and checks every path it names
// (CheckPaths), naming the entry's offset if one is refused.
func readFiles(dir *images.Dir) (map[uint32]*fdinfo.FileEntry, error) {
	r, err := dir.NewReader("files.img")
	if err != nil {
		return nil, err
	}
	defer r.Close()
	files := map[uint32]*fdinfo.FileEntry{}
	for i := 0; ; i++ {
		off := r.Offset()
		f := &fdinfo.FileEntry{}
		err := r.Next(f)
		if errors.Is(err, io.EOF) {
			return files, nil
		}
		if err != nil {
			return nil, err
		}
		if err := CheckPaths(f); err != nil {
			return nil, &images.Error{File: filepath.Join(dir.Path, "files.img"), Offset: off, Err: fmt.Errorf("entry %d: %w", i, err)}
		}
		files[f.GetId()] = f
	}
}

// ReadTask reads the root, cwd and umask of process pid (fs-PID.img) and
// its fd table (fdinfo-FILESID.img), and checks that every file id they
// name is in files (files.img).
func ReadTask(d *images.Dir, pid int, filesID uint32, files map[uint32]*fdinfo.FileEntry) (*fs.FsEntry, []*fdinfo.FdinfoEntry, error) {
	fsName := fmt.Sprintf("fs-%d.img", pid)
	fsE := &fs.FsEntry{}
	if err := d.ReadOne(fsName, fsE); err != nil {
		return nil, nil, err
	}
	for _, id := range []uint32{fsE.GetCwdId(), fsE.GetRootId()} {
		if files[id] == nil {
			return nil, nil, inconsistent(fsName, "file id %d is not in files.img", id)
		}
	}
	fdName := fmt.Sprintf("fdinfo-%d.img", filesID)
	var fds []*fdinfo.FdinfoEntry
	// criu writes no fdinfo image for a task without fds.
	if d.Has(fdName) {
		var err error
		if fds, err = images.ReadAll(d, fdName, func() *fdinfo.FdinfoEntry { return &fdinfo.FdinfoEntry{} }); err != nil {
			return nil, nil, err
		}
	}
	for _, fd := range fds {
		if files[fd.GetId()] == nil {
			return nil, nil, inconsistent(fdName, "fd %d refers to file id %d, not in files.img", fd.GetFd(), fd.GetId())
		}
		if fd.GetFd() > 1<<20 {
			return nil, nil, inconsistent(fdName, "fd number %d", fd.GetFd())
		}
	}
	return fsE, fds, nil
}

// inconsistent is the error about images that each decode but contradict
// each other.
func inconsistent(file string, format string, args ...any) error {
	return fmt.Errorf("image %s: %w: %s", file, images.ErrInconsistent, fmt.Sprintf(format, args...))
}
