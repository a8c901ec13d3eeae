package files

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	ghostfile "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	criutime "github.com/checkpoint-restore/go-criu/v8/crit/images/time"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
)

// Ghost files: an open regular file with no name left is carried in the
// images, ghost-file-ID.img: a ghost_file_entry (owner, mode, times,
// size) then, as criu 4.x writes it, only the parts of the file that hold
// data, each a ghost_chunk_entry{len, off} and its bytes. A sparse file
// stays cheap however large it looks. The restore makes the file again
// beside its old name and removes it when the restore ends.

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
	f, err := os.Open(g.src)
	if err != nil {
		return fmt.Errorf("ghost file of %s: %w", g.name, err)
	}
	defer f.Close()
	w, err := dir.NewWriter(ghostName(g.id))
	if err != nil {
		return err
	}
	if err := g.writeTo(w, f); err != nil {
		w.Abort()
		return fmt.Errorf("ghost file of %s (%s): %w", g.name, ghostName(g.id), err)
	}
	return w.Close()
}

func (g *ghost) writeTo(w *images.Writer, f *os.File) error {
	st := &g.st
	err := w.Write(&ghostfile.GhostFileEntry{
		Uid:    proto.Uint32(st.Uid),
		Gid:    proto.Uint32(st.Gid),
		Mode:   proto.Uint32(st.Mode),
		Dev:    proto.Uint32(unix.Major(st.Dev)<<20 | unix.Minor(st.Dev)),
		Ino:    proto.Uint64(st.Ino),
		Atim:   &criutime.Timeval{TvSec: proto.Uint64(uint64(st.Atim.Sec)), TvUsec: proto.Uint64(uint64(st.Atim.Nsec / 1000))},
		Mtim:   &criutime.Timeval{TvSec: proto.Uint64(uint64(st.Mtim.Sec)), TvUsec: proto.Uint64(uint64(st.Mtim.Nsec / 1000))},
		Chunks: proto.Bool(true),
		Size:   proto.Uint64(uint64(st.Size)),
	})
	if err != nil {
		return err
	}
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

// createGhost makes ghost file id again as NAME.cr.ID.ghost, criu's name
// for it (in the nearest directory of NAME that still exists), with its
// content, owner, mode and times, and returns its path.
func (r *Restorer) createGhost(id uint32, name string) (string, error) {
	rd, err := r.Dir.NewReader(ghostName(id))
	if err != nil {
		return "", err
	}
	defer rd.Close()
	ge := &ghostfile.GhostFileEntry{}
	if err := rd.Next(ge); err != nil {
		return "", err
	}
	if ge.GetMode()&unix.S_IFMT != unix.S_IFREG {
		return "", fmt.Errorf("%s: a ghost %s: %w", ghostName(id), modeName(ge.GetMode()), ErrUnsupported)
	}
	path := fmt.Sprintf("%s.cr.%x.ghost", name, id)
	var f *os.File
	for {
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, os.FileMode(ge.GetMode()&0o777))
		if err == nil {
			break
		}
		// criu's trim_last_parent: a/b/c/d becomes a/b/d.
		up := filepath.Dir(filepath.Dir(path))
		if !errors.Is(err, os.ErrNotExist) || up == filepath.Dir(path) {
			return "", fmt.Errorf("create %s: %w", path, err)
		}
		path = filepath.Join(up, filepath.Base(path))
	}
	if err := fillGhost(f, ge, rd, id); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if err := ghostMetadata(f, path, ge); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return "", err
	}
	return path, nil
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

func ghostMetadata(f *os.File, path string, ge *ghostfile.GhostFileEntry) error {
	if err := f.Chown(int(ge.GetUid()), int(ge.GetGid())); err != nil {
		return err
	}
	// After the chown, which clears set-user-ID bits; and not through the
	// umask, as the create was.
	if err := f.Chmod(os.FileMode(ge.GetMode()&0o777) | unixModeBits(ge.GetMode())); err != nil {
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
