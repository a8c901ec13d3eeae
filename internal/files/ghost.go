package files

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	ghostfile "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	criutime "github.com/checkpoint-restore/go-criu/v8/crit/images/time"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
)

// Ghost files: an open file with no name left is carried in the images,
// ghost-file-ID.img: a ghost_file_entry (owner, mode, times, size) then,
// for a regular file and as criu 4.x writes it, only the parts of the
// file that hold data, each a ghost_chunk_entry{len, off} and its bytes.
// A sparse file stays cheap however large it looks. A FIFO, a device node
// (with its rdev) or a directory has the entry only: its content is not
// in the file system (a FIFO's buffer goes to fifo-data.img, a removed
// directory is empty). The restore makes the file again beside its old
// name (a directory at its old name, as criu) and removes it when the
// restore ends.

// ghost is one unlinked file of the dump, shared by every fd and mapping
// of its inode.
type ghost struct {
	id   uint32
	src  string // a magic link that opens it while the tree is frozen
	name string
	st   unix.Stat_t
}

func ghostName(id uint32) string { return fmt.Sprintf("ghost-file-%x.img", id) }

// ghostCopyBuf is the size of the reads that copy a ghost's data.
const ghostCopyBuf = 1 << 20

func (g *ghost) write(dir *images.Dir) error {
	w, err := dir.NewWriter(ghostName(g.id))
	if err != nil {
		return err
	}
	if err := g.writeTo(w); err != nil {
		w.Abort()
		return fmt.Errorf("ghost file of %s (%s): %w", g.name, ghostName(g.id), err)
	}
	return w.Close()
}

func (g *ghost) writeTo(w *images.Writer) error {
	st := &g.st
	ge := &ghostfile.GhostFileEntry{
		Uid:  proto.Uint32(st.Uid),
		Gid:  proto.Uint32(st.Gid),
		Mode: proto.Uint32(st.Mode),
		Dev:  proto.Uint32(unix.Major(st.Dev)<<20 | unix.Minor(st.Dev)),
		Ino:  proto.Uint64(st.Ino),
		Atim: &criutime.Timeval{TvSec: proto.Uint64(uint64(st.Atim.Sec)), TvUsec: proto.Uint64(uint64(st.Atim.Nsec / 1000))},
		Mtim: &criutime.Timeval{TvSec: proto.Uint64(uint64(st.Mtim.Sec)), TvUsec: proto.Uint64(uint64(st.Mtim.Nsec / 1000))},
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		ge.Chunks, ge.Size = proto.Bool(true), proto.Uint64(uint64(st.Size))
	case unix.S_IFCHR, unix.S_IFBLK:
		// criu's u32 rdev is glibc's dev_t cut to 32 bits: exact for
		// majors below 4096 and minors below 2^20, all Linux gives out.
		ge.Rdev = proto.Uint32(uint32(st.Rdev))
	}
	if err := w.Write(ge); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		// Opening a device or a FIFO could have effects (a tape
		// rewinds, a FIFO's open waits): nothing to copy anyway.
		return nil
	}
	f, err := os.Open(g.src)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, min(ghostCopyBuf, max(st.Size, 1)))
	fd := int(f.Fd())
	for off := int64(0); off < st.Size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole up to the end
		}
		if err != nil {
			return os.NewSyscallError("lseek SEEK_DATA", err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return os.NewSyscallError("lseek SEEK_HOLE", err)
		}
		hole = min(hole, st.Size)
		if data >= hole {
			break
		}
		if err := w.Write(&ghostfile.GhostChunkEntry{Len: proto.Uint64(uint64(hole - data)), Off: proto.Uint64(uint64(data))}); err != nil {
			return err
		}
		for p := data; p < hole; {
			n, err := f.ReadAt(buf[:min(int64(len(buf)), hole-p)], p)
			if n == 0 && err != nil {
				return fmt.Errorf("read at %d: %w", p, err)
			}
			if err := w.WriteExtra(buf[:n]); err != nil {
				return err
			}
			p += int64(n)
		}
		off = hole
	}
	return nil
}

// createGhost makes ghost file id again, with its content, owner, mode
// and times, and returns its path and what to remove when the restore
// ends, in that order. A file, FIFO or device node is made as
// NAME.cr.ID.ghost, criu's name for it (in the nearest directory of NAME
// that still exists); a directory at NAME itself, with the parents it
// lost, so that a cwd in it reads "NAME (deleted)" again once they are
// removed. rf is the regular-file entry the ghost stands for.
func (r *Restorer) createGhost(id uint32, rf *regfile.RegFileEntry) (string, []string, error) {
	rd, err := r.Dir.NewReader(ghostName(id))
	if err != nil {
		return "", nil, err
	}
	defer rd.Close()
	ge := &ghostfile.GhostFileEntry{}
	off := rd.Offset()
	if err := rd.Must(ge); err != nil {
		return "", nil, err
	}
	if err := checkGhost(ge, rf); err != nil {
		return "", nil, &images.Error{File: ghostName(id), Offset: off, Err: err}
	}
	name := r.inRoot(rf.GetName())
	mode := ge.GetMode()
	if mode&unix.S_IFMT == unix.S_IFDIR {
		return makeGhostDir(id, name, ge)
	}
	path := fmt.Sprintf("%s.cr.%x.ghost", name, id)
	var f *os.File
	for {
		if err := CreateDirOK(path); errors.Is(err, images.ErrUnsafePath) {
			return "", nil, err
		}
		switch mode & unix.S_IFMT {
		case unix.S_IFREG:
			f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, os.FileMode(mode&0o777))
		default:
			err = unix.Mknod(path, mode&(unix.S_IFMT|0o777), int(ge.GetRdev()))
			if err != nil {
				err = &os.PathError{Op: "mknod", Path: path, Err: err}
			}
		}
		if err == nil {
			break
		}
		// criu's trim_last_parent: a/b/c/d becomes a/b/d.
		up := filepath.Dir(filepath.Dir(path))
		if !errors.Is(err, os.ErrNotExist) || up == filepath.Dir(path) {
			return "", nil, fmt.Errorf("create %s: %w", path, err)
		}
		path = filepath.Join(up, filepath.Base(path))
	}
	if f == nil {
		// A node: its metadata through a path, never an open.
		if err := ghostMetadata(path, ge); err != nil {
			os.Remove(path)
			return "", nil, fmt.Errorf("%s: %w", path, err)
		}
		return path, []string{path}, nil
	}
	if err := fillGhost(f, ge, rd, id); err != nil {
		f.Close()
		os.Remove(path)
		return "", nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return "", nil, err
	}
	if err := ghostMetadata(path, ge); err != nil {
		os.Remove(path)
		return "", nil, fmt.Errorf("%s: %w", path, err)
	}
	return path, []string{path}, nil
}

// checkGhost refuses a ghost entry that cannot be made again, or that is
// not the kind of file the entry it stands for says.
func checkGhost(ge *ghostfile.GhostFileEntry, rf *regfile.RegFileEntry) error {
	mode := ge.GetMode()
	switch mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFDIR, unix.S_IFIFO:
	case unix.S_IFCHR, unix.S_IFBLK:
		if ge.Rdev == nil {
			return fmt.Errorf("a ghost %s without its device number: %w", modeName(mode), images.ErrCorrupt)
		}
	default:
		return fmt.Errorf("a ghost of mode %#o: only regular files, directories, FIFOs and device nodes can be made again: %w", mode, images.ErrCorrupt)
	}
	if mode&^(unix.S_IFMT|0o7777) != 0 {
		return fmt.Errorf("a ghost of mode %#o: bits beyond the file type and permissions: %w", mode, images.ErrCorrupt)
	}
	if rf.Mode != nil && rf.GetMode()&unix.S_IFMT != mode&unix.S_IFMT {
		return fmt.Errorf("a ghost %s for %s, which was a %s: %w", modeName(mode), rf.GetName(), modeName(rf.GetMode()), images.ErrCorrupt)
	}
	return nil
}

// makeGhostDir makes a removed directory again at its old name, and the
// parents that went with it, to be removed at the end in this order: an
// fd or cwd opened in it then shows its old path. If the name is taken
// now, the directory is made as NAME.cr.ID.ghost beside it.
func makeGhostDir(id uint32, name string, ge *ghostfile.GhostFileEntry) (string, []string, error) {
	var lost []string // parents that are gone, innermost first
	for p := filepath.Dir(name); !dirExists(p); p = filepath.Dir(p) {
		lost = append(lost, p)
	}
	first := name // the first directory made: its parent exists
	if len(lost) > 0 {
		first = lost[len(lost)-1]
	}
	if err := CreateDirOK(first); errors.Is(err, images.ErrUnsafePath) {
		return "", nil, err
	}
	var made []string // innermost first: the order to remove them in
	undo := func() {
		for _, p := range made {
			os.Remove(p)
		}
	}
	for i := len(lost) - 1; i >= 0; i-- {
		if err := os.Mkdir(lost[i], 0o700); err != nil {
			undo()
			return "", nil, fmt.Errorf("make the lost parent %s of ghost directory %s: %w", lost[i], name, err)
		}
		made = slices.Insert(made, 0, lost[i])
	}
	path := name
	err := unix.Mkdir(path, 0o700)
	if errors.Is(err, unix.EEXIST) {
		path = fmt.Sprintf("%s.cr.%x.ghost", name, id)
		err = unix.Mkdir(path, 0o700)
	}
	if err != nil {
		undo()
		return "", nil, fmt.Errorf("make ghost directory %s: %w", path, os.NewSyscallError("mkdir", err))
	}
	if err := ghostMetadata(path, ge); err != nil {
		os.Remove(path)
		undo()
		return "", nil, fmt.Errorf("%s: %w", path, err)
	}
	return path, append([]string{path}, made...), nil
}

func fillGhost(f *os.File, ge *ghostfile.GhostFileEntry, rd *images.Reader, id uint32) error {
	if !ge.GetChunks() {
		data, err := rd.ReadExtra()
		if err != nil {
			return err
		}
		_, err = f.Write(data)
		return err
	}
	if ge.Size == nil {
		return fmt.Errorf("%s: chunks without a size: %w", ghostName(id), images.ErrCorrupt)
	}
	size := ge.GetSize()
	if err := f.Truncate(int64(size)); err != nil {
		return err
	}
	for {
		ce := &ghostfile.GhostChunkEntry{}
		err := rd.Next(ce)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if ce.GetOff() > size || ce.GetLen() > size-ce.GetOff() {
			return fmt.Errorf("%s: chunk of %d bytes at %d beyond the file's %d bytes: %w", ghostName(id), ce.GetLen(), ce.GetOff(), size, images.ErrCorrupt)
		}
		data, err := rd.ReadExtra()
		if err != nil {
			return err
		}
		if _, err := f.WriteAt(data, int64(ce.GetOff())); err != nil {
			return err
		}
	}
}

// ghostMetadata gives a ghost made at path its owner, mode and times,
// by path: a FIFO or device node is never opened here.
func ghostMetadata(path string, ge *ghostfile.GhostFileEntry) error {
	if err := os.Lchown(path, int(ge.GetUid()), int(ge.GetGid())); err != nil {
		return err
	}
	// After the chown, which clears set-user-ID bits; and not through the
	// umask, as the create was.
	if err := os.Chmod(path, os.FileMode(ge.GetMode()&0o777)|unixModeBits(ge.GetMode())); err != nil {
		return err
	}
	if ge.Atim != nil && ge.Mtim != nil {
		ts := []unix.Timespec{
			{Sec: int64(ge.Atim.GetTvSec()), Nsec: int64(ge.Atim.GetTvUsec()) * 1000},
			{Sec: int64(ge.Mtim.GetTvSec()), Nsec: int64(ge.Mtim.GetTvUsec()) * 1000},
		}
		if err := unix.UtimesNano(path, ts); err != nil {
			return os.NewSyscallError("utimensat", err)
		}
	}
	return nil
}

// unixModeBits turns set-user-ID, set-group-ID and sticky from a stat
// mode into os.FileMode bits.
func unixModeBits(m uint32) os.FileMode {
	var fm os.FileMode
	if m&unix.S_ISUID != 0 {
		fm |= os.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		fm |= os.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		fm |= os.ModeSticky
	}
	return fm
}
