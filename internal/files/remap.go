package files

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	remap "github.com/checkpoint-restore/go-criu/v8/crit/images/remap-file-path"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
)

// Remaps (criu's remap-fpath.img): a regular file whose name is gone
// cannot be reopened by its name. Its entry keeps the name it had, and a
// remap entry says where its content is found at restore: a ghost file
// (the content copied into ghost-file-ID.img, see ghost.go) or a hard
// link made at dump time (--link-remap). The restore gives the file its
// old name for the time of the open, so that the task sees "NAME
// (deleted)" again, then takes the name away.

// deletedSuffix is what the kernel appends to the path of a file whose
// last name was removed.
const deletedSuffix = " (deleted)"

// remapDump is the dump state of remaps.
type remapDump struct {
	ghosts  map[[2]uint64]*ghost // by device and inode
	order   []*ghost
	links   map[[2]uint64]*linkRemap
	remaps  []*remap.RemapFilePathEntry
	pending []pendingLink // remap entries whose link file has no id yet
	byKey   map[string]uint32
}

// linkRemap is a hard link stasis made at dump time to an open file
// that had lost its name.
type linkRemap struct {
	path string
	id   uint32 // its own files.img entry, given by writeRemaps
}

type pendingLink struct {
	orig uint32
	link *linkRemap
}

func remapsOf(t *Table) *remapDump {
	return stateOf(t.state, "remap", func() *remapDump {
		return &remapDump{ghosts: map[[2]uint64]*ghost{}, links: map[[2]uint64]*linkRemap{}, byKey: map[string]uint32{}}
	})
}

// unlinked reports whether a file reached through a magic link (whose
// target is target, stat st) lost its name, and returns the name it had.
func unlinked(target string, st *unix.Stat_t) (string, bool) {
	name, deleted := strings.CutSuffix(target, deletedSuffix)
	return name, deleted || st.Nlink == 0
}

// unlinked is the package's unlinked, except that without --link-remap a
// file that lost the name it was opened by but has another one in the
// same directory is taken as that file under its other name, instead of
// an error: glibc's sem_open maps a temporary file, links it under the
// semaphore's name and unlinks the temporary one, so every process using
// a named POSIX semaphore (Python's multiprocessing with spawn or
// forkserver) maps such a file, which criu refuses without --link-remap.
// The restored fd or mapping shows the other name.
func (t *Table) unlinked(target string, st *unix.Stat_t) (string, bool) {
	name, gone := unlinked(target, st)
	if gone && st.Nlink > 0 && !t.Opts.LinkRemap {
		if other, ok := otherName(filepath.Dir(name), st); ok {
			return other, false
		}
	}
	return name, gone
}

// otherName looks in dir for a name of the file whose stat is st.
func otherName(dir string, st *unix.Stat_t) (string, bool) {
	f, err := os.Open(dir)
	if err != nil {
		return "", false
	}
	defer f.Close()
	const most = 100000 // a bigger directory is not searched to the end
	for seen := 0; seen < most; {
		names, err := f.Readdirnames(1024)
		for _, n := range names {
			var o unix.Stat_t
			if unix.Fstatat(int(f.Fd()), n, &o, unix.AT_SYMLINK_NOFOLLOW) == nil && o.Dev == st.Dev && o.Ino == st.Ino {
				return filepath.Join(dir, n), true
			}
		}
		seen += len(names)
		if err != nil {
			return "", false
		}
	}
	return "", false
}

// remapUnlinked records how the unlinked file of entry id is found again
// at restore. src is a magic link that opens it (/proc/PID/fd/N,
// /proc/PID/map_files/..., /proc/PID/exe), name the name it had.
func (t *Table) remapUnlinked(id uint32, src, name string, st *unix.Stat_t) error {
	rd := remapsOf(t)
	reg := st.Mode&unix.S_IFMT == unix.S_IFREG
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFDIR, unix.S_IFIFO, unix.S_IFCHR, unix.S_IFBLK:
	default:
		return fmt.Errorf("%s is an unlinked %s: only unlinked regular files, directories, FIFOs and device nodes can be restored: %w", name, modeName(st.Mode), ErrUnsupported)
	}
	key := [2]uint64{st.Dev, st.Ino}
	// A node with no name left cannot be linked again (only an O_TMPFILE
	// file can): it is a ghost, --link-remap or not, as in criu.
	switch {
	case t.Opts.LinkRemap && t.Opts.Preflight && (st.Nlink != 0 || reg && isTmpfile(name, st)):
		return nil // it would be linked; a preflight makes no link
	case t.Opts.LinkRemap && t.Opts.Preflight:
		// Not linkable (only an O_TMPFILE file is, with no name left): it
		// is judged as the ghost it becomes.
	case t.Opts.LinkRemap && (reg || st.Nlink != 0):
		l, err := rd.link(src, name, st)
		if err == nil {
			rd.pending = append(rd.pending, pendingLink{orig: id, link: l})
			return nil
		}
		// The kernel links a file with no name left only if it was made
		// with O_TMPFILE; the others are copied as ghosts, as without
		// --link-remap.
		if st.Nlink != 0 || !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("--link-remap of %s: %w", name, err)
		}
	case st.Nlink != 0:
		// Another name of the file still exists: a copy would cut the
		// restored task off from it.
		return fmt.Errorf("%s was unlinked but the file has %d other link(s): use --link-remap to link it again under a temporary name", name, st.Nlink)
	}
	g := rd.ghosts[key]
	if g == nil {
		// Only the data is copied: a sparse file is judged by its blocks.
		// A node has none (a FIFO's buffer is not in the file system).
		if data := min(st.Blocks*512, st.Size); reg && data > t.Opts.GhostLimit {
			return fmt.Errorf("unlinked file %s holds %d bytes of data (size %d), over the ghost file limit of %d bytes: raise --ghost-limit, or use --link-remap if the file was made with O_TMPFILE",
				name, data, st.Size, t.Opts.GhostLimit)
		}
		g = &ghost{id: uint32(len(rd.order) + 1), src: src, name: name, st: *st}
		rd.ghosts[key] = g
		rd.order = append(rd.order, g)
	}
	rd.remaps = append(rd.remaps, remapEntry(id, g.id, remap.RemapType_GHOST))
	return nil
}

// isTmpfile tells a file made with O_TMPFILE by the name the kernel
// gives it, "#INODE" in its directory (d_tmpfile).
func isTmpfile(name string, st *unix.Stat_t) bool {
	return filepath.Base(name) == "#"+strconv.FormatUint(st.Ino, 10)
}

// link makes the hard link of --link-remap beside the file's old name,
// link_remap.N as criu names it (in the nearest directory that still
// exists), one per file.
func (rd *remapDump) link(src, name string, st *unix.Stat_t) (*linkRemap, error) {
	key := [2]uint64{st.Dev, st.Ino}
	if l := rd.links[key]; l != nil {
		return l, nil
	}
	dir := filepath.Dir(name)
	for n := len(rd.links) + 1; ; n++ {
		p := filepath.Join(dir, fmt.Sprintf("link_remap.%d", n))
		err := unix.Linkat(unix.AT_FDCWD, src, unix.AT_FDCWD, p, unix.AT_SYMLINK_FOLLOW)
		switch {
		case err == nil:
			l := &linkRemap{path: p}
			rd.links[key] = l
			return l, nil
		case errors.Is(err, unix.EEXIST):
			continue
		case errors.Is(err, unix.ENOENT) && dir != "/" && !dirExists(dir):
			dir = filepath.Dir(dir)
			n--
			continue
		default:
			return nil, fmt.Errorf("link %s to %s: %w", src, p, os.NewSyscallError("linkat", err))
		}
	}
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// RemoveLinkRemaps removes the links --link-remap made, when a dump
// fails: the tree is left as it was.
func (t *Table) RemoveLinkRemaps() {
	for _, l := range remapsOf(t).links {
		os.Remove(l.path)
	}
}

func remapEntry(orig, id uint32, typ remap.RemapType) *remap.RemapFilePathEntry {
	return &remap.RemapFilePathEntry{OrigId: proto.Uint32(orig), RemapId: proto.Uint32(id), RemapType: typ.Enum()}
}

// writeRemaps gives each link remap its files.img entry and writes the
// ghost files and remap-fpath.img.
func writeRemaps(t *Table, dir *images.Dir) error {
	rd := remapsOf(t)
	for _, p := range rd.pending {
		if p.link.id == 0 {
			var st unix.Stat_t
			if err := unix.Stat(p.link.path, &st); err != nil {
				return fmt.Errorf("link remap %s: %w", p.link.path, err)
			}
			fe := regEntry(p.link.path, 0, 0, &st)
			fe.Reg.Size, fe.Reg.Mode = nil, nil // as criu: the file it stands for is checked
			p.link.id = t.Add(fe)
		}
		rd.remaps = append(rd.remaps, remapEntry(p.orig, p.link.id, remap.RemapType_LINKED))
	}
	rd.pending = nil
	for _, g := range rd.order {
		if err := g.write(dir); err != nil {
			return err
		}
	}
	if len(rd.remaps) == 0 {
		return nil
	}
	ms := make([]proto.Message, len(rd.remaps))
	for i, e := range rd.remaps {
		ms[i] = e
	}
	return dir.Write("remap-fpath.img", ms...)
}

// remapRestore is the restore state of remaps.
type remapRestore struct {
	err    error
	byOrig map[uint32]*remap.RemapFilePathEntry
	ghosts map[uint32]string // ghost id -> the file made for it
	links  map[uint32]bool   // link remaps to remove when the restore succeeds
}

func remapsFor(r *Restorer) *remapRestore {
	return stateOf(r.state, "remap", func() *remapRestore {
		rr := &remapRestore{byOrig: map[uint32]*remap.RemapFilePathEntry{}, ghosts: map[uint32]string{}, links: map[uint32]bool{}}
		if r.Dir == nil || !r.Dir.Has("remap-fpath.img") {
			return rr
		}
		ents, err := images.ReadAll(r.Dir, "remap-fpath.img", func() *remap.RemapFilePathEntry { return &remap.RemapFilePathEntry{} })
		if err != nil {
			rr.err = err
			return rr
		}
		for _, e := range ents {
			rr.byOrig[e.GetOrigId()] = e
		}
		return rr
	})
}

// remapped returns the path the content of entry fe can be opened by now,
// if fe was remapped at dump time.
func (r *Restorer) remapped(fe *fdinfo.FileEntry) (string, bool, error) {
	rr := remapsFor(r)
	if rr.err != nil {
		return "", false, rr.err
	}
	e := rr.byOrig[fe.GetId()]
	if e == nil {
		return "", false, nil
	}
	name := fe.GetReg().GetName()
	switch e.GetRemapType() {
	case remap.RemapType_GHOST:
		if p, ok := rr.ghosts[e.GetRemapId()]; ok {
			return p, true, nil
		}
		p, made, err := r.createGhost(e.GetRemapId(), fe.GetReg())
		if err != nil {
			return "", false, fmt.Errorf("file id %d (%s): ghost file %d: %w", fe.GetId(), name, e.GetRemapId(), err)
		}
		rr.ghosts[e.GetRemapId()] = p
		r.OnDone(func() error {
			var errs []error
			for _, m := range made {
				errs = append(errs, os.Remove(m))
			}
			return errors.Join(errs...)
		})
		return p, true, nil
	case remap.RemapType_LINKED:
		lf := r.Files[e.GetRemapId()].GetReg()
		if lf == nil {
			return "", false, fmt.Errorf("file id %d (%s): link remap file id %d is not a regular file in files.img: %w", fe.GetId(), name, e.GetRemapId(), images.ErrCorrupt)
		}
		if !linkRemapName.MatchString(filepath.Base(lf.GetName())) {
			return "", false, fmt.Errorf("file id %d (%s): link remap file id %d is %s, not a link_remap.N file that the restore may remove: %w",
				fe.GetId(), name, e.GetRemapId(), lf.GetName(), images.ErrUnsafePath)
		}
		if !rr.links[e.GetRemapId()] {
			rr.links[e.GetRemapId()] = true
			// Kept if the restore fails, so that it can be tried again.
			r.onSuccess(func() error { return os.Remove(r.inRoot(lf.GetName())) })
		}
		return r.inRoot(lf.GetName()), true, nil
	case remap.RemapType_PROCFS:
		return "", false, r.deadProcOpen(fe.GetId(), name, int(e.GetRemapId()))
	}
	return "", false, fmt.Errorf("file id %d (%s): remap type %v: %w", fe.GetId(), name, e.GetRemapType(), ErrUnsupported)
}

// openAs opens the file at path under the name it had (or, if that name
// is taken, NAME.cr_link, as criu does) and removes that name again, so
// that the open file shows "NAME (deleted)" as it did when dumped. A
// directory cannot be linked: a ghost one is made at its name already
// (makeGhostDir).
func openAs[F io.Closer](path, name string, open func(string) (F, error)) (F, error) {
	if path == name {
		return open(path)
	}
	if err := CreateDirOK(name); errors.Is(err, images.ErrUnsafePath) {
		var zero F
		return zero, err
	}
	for _, tmp := range []string{name, name + ".cr_link"} {
		err := unix.Linkat(unix.AT_FDCWD, path, unix.AT_FDCWD, tmp, 0)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			break // the old directory is gone: open it by the remap's name
		}
		f, err := open(tmp)
		if rerr := os.Remove(tmp); rerr != nil && err == nil {
			f.Close()
			var zero F
			return zero, rerr
		}
		return f, err
	}
	return open(path)
}

func modeName(m uint32) string {
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFLNK:
		return "symbolic link"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	case unix.S_IFSOCK:
		return "socket"
	}
	return fmt.Sprintf("file of mode %#o", m&unix.S_IFMT)
}
