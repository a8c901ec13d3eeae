package files

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	ghostfile "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/memfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	remap "github.com/checkpoint-restore/go-criu/v8/crit/images/remap-file-path"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/testutil"
)

// The restore reads the images of the fd kinds (queued data, terminal
// state, locks, ghost files, ...) when it opens their files. These
// targets run those readers and the checks the restore makes before it
// acts, on the real dumps of test/images with one image replaced by the
// fuzzer's bytes: no panic, no allocation a corrupt length asks for, and
// an error that names the image.

// seedRestorer is the Restorer of the dump in dir, as the restore makes
// it from files.img and memfd.img.
func seedRestorer(tb testing.TB, dir string) (*Restorer, error) {
	d, err := images.Open(dir)
	if err != nil {
		tb.Fatal(err)
	}
	fes, err := images.ReadAll(d, "files.img", func() *fdinfo.FileEntry { return &fdinfo.FileEntry{} })
	if err != nil {
		return nil, err
	}
	byID := map[uint32]*fdinfo.FileEntry{}
	for _, fe := range fes {
		byID[fe.GetId()] = fe
	}
	memfds := map[uint32]*memfd.MemfdInodeEntry{}
	if d.Has("memfd.img") {
		ms, err := images.ReadAll(d, "memfd.img", func() *memfd.MemfdInodeEntry { return &memfd.MemfdInodeEntry{} })
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			memfds[uint32(m.GetInodeId())] = m
		}
	}
	r := NewRestorer(RestoreOptions{FileLocks: true}, d, byID, memfds)
	// No pid of a fuzzed image is ever looked up on this host.
	r.HostPids = map[int]int{}
	return r, nil
}

// fuzzKind fuzzes the images matching glob in the seed dumps that have
// one: read(r, path) is what the restore does with it.
func fuzzKind(f *testing.F, glob string, read func(t *testing.T, r *Restorer, path string) error) {
	testutil.FuzzSeedImages(f, glob, func(t *testing.T, path string) error {
		r, err := seedRestorer(t, filepath.Dir(path))
		if err != nil {
			return err // files.img or memfd.img refused, as readImages does
		}
		err = read(t, r, path)
		if cerr := r.Close(); cerr != nil {
			t.Errorf("close: %v", cerr)
		}
		return err
	})
}

func FuzzPipesData(f *testing.F) {
	fuzzKind(f, "pipes-data.img", func(t *testing.T, r *Restorer, path string) error {
		_, err := readPipeDataImage(r.Dir, "pipes-data.img")
		return err
	})
}

func FuzzFifoData(f *testing.F) {
	fuzzKind(f, "fifo-data.img", func(t *testing.T, r *Restorer, path string) error {
		_, err := readPipeDataImage(r.Dir, "fifo-data.img")
		return err
	})
}

func FuzzFileLocks(f *testing.F) {
	fuzzKind(f, "filelocks.img", func(t *testing.T, r *Restorer, path string) error {
		byPid, err := r.readLocks()
		for _, ls := range byPid {
			for _, l := range ls {
				_ = describeEntry(l)
			}
		}
		return err
	})
}

func FuzzRemapFpath(f *testing.F) {
	fuzzKind(f, "remap-fpath.img", func(t *testing.T, r *Restorer, path string) error {
		return remapsFor(r).err
	})
}

// FuzzGhostFile: a ghost file's entry, checked against the file it stands
// for, and its content written into a file as createGhost does.
func FuzzGhostFile(f *testing.F) {
	out := filepath.Join(f.TempDir(), "ghost")
	fuzzKind(f, "ghost-file-*.img", func(t *testing.T, r *Restorer, path string) error {
		var id uint32
		if _, err := fmt.Sscanf(filepath.Base(path), "ghost-file-%x.img", &id); err != nil {
			t.Fatal(err)
		}
		rf := &regfile.RegFileEntry{}
		if rr := remapsFor(r); rr.err == nil {
			for _, e := range rr.byOrig {
				if e.GetRemapType() == remap.RemapType_GHOST && e.GetRemapId() == id && r.Files[e.GetOrigId()].GetReg() != nil {
					rf = r.Files[e.GetOrigId()].GetReg()
				}
			}
		}
		rd, err := r.Dir.NewReader(ghostName(id))
		if err != nil {
			return err
		}
		defer rd.Close()
		ge := &ghostfile.GhostFileEntry{}
		if err := rd.Must(ge); err != nil {
			return err
		}
		if err := checkGhost(ge, rf); err != nil {
			return fmt.Errorf("%s: %w", ghostName(id), err)
		}
		if ge.GetMode()&unix.S_IFMT != unix.S_IFREG {
			return nil
		}
		w, err := os.OpenFile(out, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		err = fillGhost(w, ge, rd, id)
		var pe *os.PathError
		if errors.As(err, &pe) && pe.Path == out {
			return nil // the file system's limits, not the image's
		}
		return err
	})
}

// FuzzMemfd: memfd.img and the contents of the memfds
// (pagemap-shmem-N.img) made again as the restore makes them.
func FuzzMemfd(f *testing.F) {
	testutil.RequireRoot(f) // the memfds get their owners back (chown)
	read := func(t *testing.T, r *Restorer, path string) error {
		for _, inode := range r.Memfds {
			m, err := createMemfd(inode, r.Dir)
			if err != nil {
				return err
			}
			m.Close()
		}
		return nil
	}
	fuzzKind(f, "pagemap-shmem-*.img", read)
}

func FuzzMemfdInodes(f *testing.F) {
	testutil.RequireRoot(f) // the memfds get their owners back (chown)
	fuzzKind(f, "memfd.img", func(t *testing.T, r *Restorer, path string) error {
		for _, inode := range r.Memfds {
			m, err := createMemfd(inode, r.Dir)
			if err != nil {
				return fmt.Errorf("memfd.img: %w", err)
			}
			m.Close()
		}
		return nil
	})
}

// FuzzPidfd: the pidfd entries of files.img, with their flags and pids
// checked. No pid of the image is taken as one of this host.
func FuzzPidfd(f *testing.F) {
	fuzzKind(f, "files.img", func(t *testing.T, r *Restorer, path string) error {
		for _, fe := range r.Files {
			if fe.GetType() != fdinfo.FdTypes_PIDFD || fe.GetPidfd().GetNspid() == -1 {
				continue // a gone process's pidfd starts a process
			}
			pf, err := openPidfd(r, fe)
			if err != nil {
				return fmt.Errorf("files.img: %w", err)
			}
			pf.Close()
		}
		return nil
	})
}
