package restore

import (
	"errors"
	"fmt"

	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/memfd"
	pstreepb "github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/seccomp"

	"github.com/stasis-cr/stasis/internal/checksum"
	"github.com/stasis-cr/stasis/internal/core"
	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/kerndat"
	"github.com/stasis-cr/stasis/internal/mem"
	"github.com/stasis-cr/stasis/internal/pstree"
)

// ErrBadImage is wrapped by errors about images that are inconsistent
// although each decodes.
var ErrBadImage = images.ErrInconsistent

// ErrIncomplete is wrapped when the images dir holds no complete dump.
var ErrIncomplete = errors.New("not a complete dump")

// taskImages is everything the images say about one process, and its
// place in the tree as restore builds it (a helper has only the latter).
type taskImages struct {
	*pstree.Proc
	core    *criucore.CoreEntry   // the leader's, with task_core
	threads []*criucore.CoreEntry // every thread's but the leader's, in pstree order
	ids     *criucore.TaskKobjIdsEntry
	mem     *mem.Image // the address space: mm and pagemap
	fs      *fs.FsEntry
	fds     []*fdinfo.FdinfoEntry
}

type imageSet struct {
	dir     *images.Dir
	inv     *inventory.InventoryEntry
	files   map[uint32]*fdinfo.FileEntry
	root    *taskImages
	all     []*taskImages // pstree order, parents first; helpers not included
	byProc  map[*pstree.Proc]*taskImages
	seccomp []*seccomp.SeccompFilter
	memfds  map[uint32]*memfd.MemfdInodeEntry // by inode_id
	shmem   *mem.ShmemObjects                 // shared anonymous memory, created in stasis
}

func bad(file string, format string, args ...any) error {
	return fmt.Errorf("image %s: %w: %s", file, ErrBadImage, fmt.Sprintf(format, args...))
}

// readImages reads and cross-checks every image before anything is
// created, so that a damaged dump fails without side effects.
func readImages(path string) (*imageSet, error) {
	dir, err := images.Open(path)
	if err != nil {
		return nil, err
	}
	// The dump writes inventory.img last and a failed or interrupted dump
	// removes what it wrote: without it, this is no complete dump.
	if !dir.Has("inventory.img") {
		return nil, fmt.Errorf("restore from %s: no inventory.img: %w (a dump that failed or was interrupted leaves none; dump again)", path, ErrIncomplete)
	}
	// A manifest written by stasis at dump time catches damage the framing
	// cannot see (a flipped register or page byte still decodes). It is
	// checked while the images are decoded (nothing is created before
	// both are done); its error, which names the byte range, comes first.
	verified := make(chan error, 1)
	go func() { verified <- checksum.Verify(path) }()
	s, err := decodeImages(dir)
	if verr := <-verified; verr != nil {
		if s != nil {
			s.shmem.Close()
		}
		return nil, verr
	}
	return s, err
}

// decodeImages reads every image of dir that the restore needs up front.
func decodeImages(dir *images.Dir) (*imageSet, error) {
	s := &imageSet{dir: dir, shmem: mem.NewShmemObjects(dir), byProc: map[*pstree.Proc]*taskImages{}}
	s.inv = &inventory.InventoryEntry{}
	if err := dir.ReadOne("inventory.img", s.inv); err != nil {
		return nil, err
	}
	if v := s.inv.GetImgVersion(); v != 2 {
		return nil, bad("inventory.img", "image version %d, want 2 (CRIU 4.x)", v)
	}
	if !s.inv.GetFdinfoPerId() {
		return nil, bad("inventory.img", "images without fdinfo_per_id are too old")
	}
	trees, err := pstree.ReadImage(dir)
	if err != nil {
		return nil, err
	}
	if s.files, s.memfds, err = files.ReadImages(dir); err != nil {
		return nil, err
	}
	if dir.Has("seccomp.img") {
		se := &seccomp.SeccompEntry{}
		if err := dir.ReadOne("seccomp.img", se); err != nil {
			return nil, err
		}
		s.seccomp = se.GetSeccompFilters()
	}
	var tree pstree.Tree
	for _, pe := range trees {
		ti, err := s.readTask(pe)
		if err != nil {
			return nil, err
		}
		if err := tree.Add(ti.Proc); err != nil {
			return nil, err
		}
		s.all = append(s.all, ti)
		s.byProc[ti.Proc] = ti
	}
	s.root = s.all[0]
	return s, nil
}

// checkUnprivileged refuses a tree that a restore without CAP_SYS_ADMIN
// cannot bring back: a task under seccomp (strict mode or filters) would
// meet its filter in the calls stasis injects after installing it
// (credentials, the scratch page's unmap), and only
// PTRACE_O_SUSPEND_SECCOMP, which needs CAP_SYS_ADMIN, prevents that.
func (s *imageSet) checkUnprivileged() error {
	for _, ti := range s.all {
		for _, c := range append([]*criucore.CoreEntry{ti.core}, ti.threads...) {
			if m := c.GetThreadCore().GetSeccompMode(); m != 0 {
				return fmt.Errorf("restore pid %d: it is under seccomp (mode %d): restoring it needs CAP_SYS_ADMIN (PTRACE_O_SUSPEND_SECCOMP), which --unprivileged has not: %w",
					ti.Pid(), m, kerndat.ErrPrivilege)
			}
		}
	}
	return nil
}

func (s *imageSet) readTask(pe *pstreepb.PstreeEntry) (*taskImages, error) {
	pid := pe.GetPid()
	if pid == 0 {
		return nil, bad("pstree.img", "pid 0")
	}
	ti := &taskImages{Proc: &pstree.Proc{Entry: pe}}
	d := s.dir
	ci, err := core.ReadImages(d, pe, s.seccomp)
	if err != nil {
		return nil, err
	}
	ti.core, ti.threads, ti.Zombie = ci.Core, ci.Threads, ci.Zombie
	if ti.Zombie {
		return ti, nil
	}
	ti.ids = &criucore.TaskKobjIdsEntry{}
	if err := d.ReadOne(fmt.Sprintf("ids-%d.img", pid), ti.ids); err != nil {
		return nil, err
	}
	if ti.mem, err = mem.ReadImage(d, pid, s.hasFile, s.shmem); err != nil {
		return nil, err
	}
	if ti.fs, ti.fds, err = files.ReadTask(d, int(pid), ti.ids.GetFilesId(), s.files); err != nil {
		return nil, err
	}
	return ti, nil
}

// of returns the images of process p of the tree.
func (s *imageSet) of(p *pstree.Proc) *taskImages { return s.byProc[p] }

// addHelpers adds the tree's helper tasks (pstree.AddHelpers).
func (s *imageSet) addHelpers(shellJob bool) error {
	procs := make([]*pstree.Proc, 0, len(s.all))
	for _, ti := range s.all {
		procs = append(procs, ti.Proc)
	}
	helpers, err := pstree.AddHelpers(procs, shellJob)
	for _, h := range helpers {
		s.byProc[h] = &taskImages{Proc: h}
	}
	if err != nil {
		return err
	}
	return s.addPidHelpers(procs)
}

// addPidHelpers adds a helper task for each pid whose /proc directory a
// file of the images is inside (files.DeadPids).
func (s *imageSet) addPidHelpers(procs []*pstree.Proc) error {
	pids, err := files.DeadPids(s.dir)
	if err != nil {
		return err
	}
	for _, pid := range pids {
		h, err := pstree.AddPidHelper(procs, pid)
		if err != nil {
			return err
		}
		if s.byProc[h] == nil {
			s.byProc[h] = &taskImages{Proc: h}
		}
	}
	return nil
}

// allPids lists every pid and tid the restore will create.
func (s *imageSet) allPids() []int { return pstree.AllPids(s.root.Proc) }

// maxFd is the highest fd number of any task of the image.
func (s *imageSet) maxFd() int {
	m := 2
	for _, ti := range s.all {
		for _, fd := range ti.fds {
			m = max(m, int(fd.GetFd()))
		}
	}
	return m
}

// hasFile reports whether id is in files.img.
func (s *imageSet) hasFile(id uint32) bool { return s.files[id] != nil }

// fileName is the path of files.img entry id (of a regular file).
func (s *imageSet) fileName(id uint32) string { return s.files[id].GetReg().GetName() }

// sameFile reports whether two file ids of files.img name the same file.
func (s *imageSet) sameFile(a, b uint32) bool {
	if a == b {
		return true
	}
	fa, fb := s.files[a].GetReg(), s.files[b].GetReg()
	return fa != nil && fb != nil && fa.GetName() == fb.GetName()
}
