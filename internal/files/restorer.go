package files

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/memfd"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/images"
)

// Restorer opens the files of a dump's files.img in stasis, each once:
// the fds of every task with the same file id get copies of that one open
// file description, as they shared it when dumped.
type Restorer struct {
	Dir    *images.Dir
	Files  map[uint32]*fdinfo.FileEntry      // files.img by id
	Memfds map[uint32]*memfd.MemfdInodeEntry // memfd.img by inode id
	Opts   RestoreOptions
	open   map[uint32]*os.File
	// homes, lru, inLRU and budget bound the files stasis holds at once
	// (fdbudget.go): where each passed file lives in a task, the open
	// ones that may be closed, oldest first, and how many of them stay.
	homes  map[uint32]fdHome
	lru    []uint32
	inLRU  map[uint32]bool
	budget int
	state  map[string]any // per-kind state, see stateOf
	// done run when the restore ends, success or not (a ghost file made
	// to be opened is unlinked again, ...), last registered first.
	done []func() error
	// final run once every task has its memory and its fds, before any
	// task runs (memfd seals).
	final []func() error
	// succeeded run, before done, only if Succeeded was called: what
	// must survive a failed restore so that it can be tried again (the
	// links of --link-remap).
	succeeded []func() error
	success   bool
	// undo run by Rollback, before the tasks of a failed restore are
	// killed: what must not be seen outside when they die.
	undo []func() error
	// HostPids is the pid stasis sees for each pid and tid of the images
	// (they differ with --pidns), entered by the restore as it creates
	// the tasks; nil means the same.
	HostPids map[int]int
	// Root is where stasis reaches the root of the tree's own mount
	// namespace once it is restored ("/proc/PID/root"), "" when the tree
	// has none: the paths of its files are resolved there (mountns.go).
	Root string
	// RootOf is where stasis reaches the root of the mount namespace
	// that mount mntID is in, root for the tree's own (a namespace
	// nested in it has its own root: mountns.go).
	RootOf func(mntID int32, root string) string
	// NetNS runs fn in the network namespace the tree's sockets belong
	// to, set by the restore once the tree's root made or joined one;
	// nil is stasis' own. Sockets are created through InNetNS.
	NetNS func(fn func() error) error
	// NsPath gives the path that opens the namespace of an id and
	// CLONE_NEW* flag of the images, set by the restore (internal/ns):
	// nsfile.go.
	NsPath func(id, cflag uint32) (string, error)
}

// InNetNS runs fn, which creates sockets, in the tree's network
// namespace (a socket is of the namespace of the thread that made it).
func (r *Restorer) InNetNS(fn func() error) error {
	if r.NetNS == nil {
		return fn()
	}
	return r.NetNS(fn)
}

// NewRestorer returns a Restorer of the files of a dump.
func NewRestorer(opts RestoreOptions, dir *images.Dir, files map[uint32]*fdinfo.FileEntry, memfds map[uint32]*memfd.MemfdInodeEntry) *Restorer {
	return &Restorer{Opts: opts, Dir: dir, Files: files, Memfds: memfds, open: map[uint32]*os.File{}, state: map[string]any{},
		homes: map[uint32]fdHome{}, inLRU: map[uint32]bool{}, budget: fdBudget()}
}

// Open returns the file with the given id, opened again in stasis the
// first time it is asked for, or taken back from the task it was passed
// to if stasis closed its copy since. The caller must not close it, nor
// keep it past its own step.
func (r *Restorer) Open(id uint32) (*os.File, error) {
	if f, ok := r.open[id]; ok {
		return f, nil
	}
	if f, ok, err := r.fromHome(id); ok {
		if err != nil {
			return nil, err
		}
		r.open[id] = f
		r.keep(id)
		return f, nil
	}
	fe := r.Files[id]
	if fe == nil {
		return nil, fmt.Errorf("file id %d is not in files.img", id)
	}
	if reg := fe.GetReg(); reg != nil && fe.GetType() == fdinfo.FdTypes_REG {
		// criu's keys of files are paths relative to the root.
		if f, ok := r.Inherited(strings.TrimPrefix(reg.GetName(), "/")); ok {
			r.open[id] = f
			return f, nil
		}
	}
	k := kindsByType[fe.GetType()]
	if k == nil || k.Open == nil {
		return nil, fmt.Errorf("file id %d of type %v: %w", id, fe.GetType(), ErrUnsupported)
	}
	f, err := k.Open(r, fe)
	if err != nil {
		return nil, err
	}
	r.open[id] = f
	return f, nil
}

// OpenMapping returns the file with the given id for a mapping that was
// made with the access mode of fdflags (vma_entry.fdflags). criu gives a
// mapping's file entry the flags of no particular fd (a memfd behind a
// shared mapping is O_RDONLY in files.img) and puts the mapping's own in
// the VMA: a description of another access mode is opened again through
// the first one's magic link.
func (r *Restorer) OpenMapping(id, fdflags uint32) (*os.File, error) {
	f, err := r.Open(id)
	if err != nil {
		return nil, err
	}
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		return nil, fmt.Errorf("file id %d: %w", id, err)
	}
	mode := int(fdflags) & unix.O_ACCMODE
	if fe := r.Files[id]; fe.GetType() == fdinfo.FdTypes_MEMFD && r.Memfds[fe.GetMemfd().GetInodeId()].GetSeals()&unix.F_SEAL_WRITE != 0 {
		// No writable shared mapping can exist with F_SEAL_WRITE, and
		// one of an O_RDWR description counts as writable (criu records
		// O_RDWR and then fails to seal its own restore).
		mode = unix.O_RDONLY
	}
	if fl&unix.O_ACCMODE == mode {
		return f, nil
	}
	key := fmt.Sprintf("mapping %d %d", id, mode)
	if g, ok := r.state[key].(*os.File); ok {
		return g, nil
	}
	g, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), mode|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("file id %d for a mapping with flags %#o: %w", id, fdflags, err)
	}
	r.state[key] = g
	r.OnDone(g.Close)
	return g, nil
}

// Log is the logger of the restore's messages (Opts.Log, or one that
// discards them).
func (r *Restorer) Log() *slog.Logger {
	if r.Opts.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Opts.Log
}

// OnDone registers fn to run when the restore ends, success or not (in
// Close, last registered first): what a kind's Open made for itself
// (sockets, ghost files, the other end of a pair) goes away then.
func (r *Restorer) OnDone(fn func() error) { r.done = append(r.done, fn) }

// atVeryEnd registers fn to run in Close after every OnDone function,
// whenever it was registered.
func (r *Restorer) atVeryEnd(fn func() error) { r.done = append([]func() error{fn}, r.done...) }

// BeforeRun registers fn to run in Finish, once every task has its
// memory and fds and before any runs: what a task must not see half
// done (memfd seals, a TCP connection out of repair mode).
func (r *Restorer) BeforeRun(fn func() error) { r.final = append(r.final, fn) }

// Finish completes the files once every task has its mappings and its
// fds, before any task runs: what cannot be done while they are being
// made (memfd seals forbid writable mappings).
func (r *Restorer) Finish() error {
	for _, fn := range r.final {
		if err := fn(); err != nil {
			return err
		}
	}
	r.final = nil
	return nil
}

// OnRollback registers fn to run if the restore fails (Rollback), before
// its tasks are killed: what must not be seen outside when they die.
func (r *Restorer) OnRollback(fn func() error) { r.undo = append(r.undo, fn) }

// Rollback is called by a failed restore before it kills the tasks it
// created: restored TCP connections go back into repair mode, so that
// they vanish without a FIN or a reset to their peer and without a
// socket left in FIN_WAIT holding the port, which a later restore needs.
func (r *Restorer) Rollback() error {
	var errs []error
	for i := len(r.undo) - 1; i >= 0; i-- {
		errs = append(errs, r.undo[i]())
	}
	r.undo = nil
	return errors.Join(errs...)
}

// onSuccess registers fn to run when the restore ends well.
func (r *Restorer) onSuccess(fn func() error) { r.succeeded = append(r.succeeded, fn) }

// Succeeded tells the Restorer that the restore succeeded, before Close.
func (r *Restorer) Succeeded() { r.success = true }

// Close closes every file stasis opened (the tasks keep their copies)
// and runs what kinds registered to run at the end.
func (r *Restorer) Close() error {
	var errs []error
	for _, f := range r.open {
		f.Close()
	}
	r.open = map[uint32]*os.File{}
	r.lru, r.inLRU = nil, map[uint32]bool{}
	if r.success {
		for _, fn := range r.succeeded {
			errs = append(errs, fn())
		}
	}
	r.succeeded = nil
	for i := len(r.done) - 1; i >= 0; i-- {
		errs = append(errs, r.done[i]())
	}
	r.done = nil
	return errors.Join(errs...)
}

// stateOf returns the state a kind keeps in m (a Table's or a Restorer's)
// under key, made by mk the first time.
func stateOf[T any](m map[string]any, key string, mk func() *T) *T {
	if v, ok := m[key]; ok {
		return v.(*T)
	}
	v := mk()
	m[key] = v
	return v
}

// Inherited returns a new file on the open file description stasis was
// given for key (--inherit-fd fd[N]:KEY), if any: "pipe:[INO]", a
// socket's "socket:[INO]", or a file's path (with or without its leading
// slash, as criu). A kind's Open asks for it before it makes the file.
func (r *Restorer) Inherited(key string) (*os.File, bool) {
	for _, in := range r.Opts.InheritFds {
		if in.Key == key || strings.TrimPrefix(in.Key, "/") == key {
			fd, err := unix.FcntlInt(uintptr(in.Fd), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				return nil, false
			}
			// Wrap it blocking (see reopenFifo), then put its flags back.
			fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
			AnonSetfl(fd, uint32(fl)&^unix.O_NONBLOCK)
			f := NewAnonFile(fd, key)
			AnonSetfl(fd, uint32(fl))
			return f, true
		}
	}
	return nil, false
}
