package mount

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	mntimg "github.com/checkpoint-restore/go-criu/v8/crit/images/mnt"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/remote"
)

// Image is the mount namespace of a dump, made again by Build in the new
// mount namespace of the restored root task.
type Image struct {
	dir    *images.Dir
	name   string
	mounts []*rmount // mountinfo order: the image's reversed
	byID   map[uint32]*rmount
	root   *rmount
	opts   RestoreOptions
	keys   map[string]string
	host   []proc.Mount // stasis' own mounts, for autodetected ones
}

type rmount struct {
	e      *mntimg.MntEntry
	parent *rmount
	source string   // a path of stasis' namespace to bind it from (external, --root)
	target string   // where it is mounted while the tree is built
	fd     *os.File // O_PATH on its root once mounted
	newID  uint64   // its id once mounted
	group  int      // its peer group once mounted (0: none)
}

// Load reads mountpoints-ID.img and checks that its entries form one
// tree of clean absolute mountpoints, before anything is created.
func Load(dir *images.Dir, id uint32) (*Image, error) {
	im := &Image{dir: dir, name: ImageName(id), byID: map[uint32]*rmount{}}
	es, err := images.ReadAll(dir, im.name, func() *mntimg.MntEntry { return &mntimg.MntEntry{} })
	if err != nil {
		return nil, err
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("image %s: %s: %w", im.name, fmt.Sprintf(format, args...), ErrBadImage)
	}
	for i := len(es) - 1; i >= 0; i-- {
		e := es[i]
		mp := e.GetMountpoint()
		if !path.IsAbs(mp) || path.Clean(mp) != mp {
			return nil, bad("mount %d: mountpoint %q is not a clean absolute path", e.GetMntId(), mp)
		}
		// Its root names a directory bind mounts are made from.
		if r := e.GetRoot(); !path.IsAbs(r) || path.Clean(r) != r {
			return nil, bad("mount %d: root %q is not a clean absolute path", e.GetMntId(), r)
		}
		if im.byID[e.GetMntId()] != nil {
			return nil, bad("mount %d listed twice", e.GetMntId())
		}
		m := &rmount{e: e}
		im.mounts = append(im.mounts, m)
		im.byID[e.GetMntId()] = m
	}
	for _, m := range im.mounts {
		p := im.byID[m.e.GetParentMntId()]
		if p == nil || p == m {
			if im.root != nil {
				return nil, bad("two root mounts, %d and %d", im.root.e.GetMntId(), m.e.GetMntId())
			}
			im.root = m
			continue
		}
		if !under(m.e.GetMountpoint(), p.e.GetMountpoint()) {
			return nil, bad("mount %d at %s is not below its parent %d at %s", m.e.GetMntId(), m.e.GetMountpoint(), p.e.GetMntId(), p.e.GetMountpoint())
		}
		m.parent = p
	}
	if im.root == nil || im.root.e.GetMountpoint() != "/" {
		return nil, bad("no root mount at /")
	}
	// A cycle of parents has no way to the root.
	for _, m := range im.mounts {
		n := 0
		for p := m; p != im.root; p = p.parent {
			if n++; n > len(im.mounts) || p == nil {
				return nil, bad("mount %d does not lead to the root", m.e.GetMntId())
			}
		}
	}
	return im, nil
}

// Has tells whether mount id is one of the image's (a file's mnt_id).
func (im *Image) Has(id int32) bool { return im.byID[uint32(id)] != nil }

// Prepare resolves what the restore is given for the tree: the root
// (--root), each external mount's source (--external mnt[KEY]:PATH,
// --ext-mount-map KEY:PATH), and refuses a mount it cannot make, naming
// the key or the mount, before any task is created.
func (im *Image) Prepare(opts RestoreOptions) error {
	im.opts = opts
	var err error
	if im.keys, err = opts.restoreKeys(); err != nil {
		return err
	}
	if im.host, err = proc.ReadMountinfo(os.Getpid()); err != nil {
		return fmt.Errorf("stasis' own mounts: %w", err)
	}
	for _, m := range im.mounts {
		e := m.e
		if key := e.GetExtKey(); key != "" {
			if m.source, err = im.external(m); err != nil {
				return err
			}
			continue
		}
		if m == im.root {
			switch {
			case opts.Root != "":
				if st, err := os.Stat(opts.Root); err != nil || !st.IsDir() {
					return fmt.Errorf("restore: --root %s: not a directory (%v)", opts.Root, err)
				}
				m.source = opts.Root
			case fsName(e) == "" || mntimg.Fstype(e.GetFstype()) == mntimg.Fstype_OVERLAYFS:
				return fmt.Errorf("restore: the container's root mount (%s of %s) is bound from the host: give its root directory with --root PATH (as criu)",
					e.GetRoot(), devName(e.GetRootDev()))
			}
			continue
		}
		if fsName(e) == "" && im.bindSource(m, im.mounts) == nil {
			return fmt.Errorf("restore: mount %d at %s: a bind mount of %s on %s, which no mount of the image holds and no external key names: %w",
				e.GetMntId(), e.GetMountpoint(), e.GetRoot(), devName(e.GetRootDev()), ErrNotSupported)
		}
	}
	return nil
}

func devName(d uint32) string { return fmt.Sprintf("%d:%d", d>>20, d&(1<<20-1)) }

// external finds the source of an external mount.
func (im *Image) external(m *rmount) (string, error) {
	key := m.e.GetExtKey()
	if key == Autodetected {
		dev := m.e.GetRootDev()
		for _, h := range im.host {
			if kdev(h.Major, h.Minor) == dev && under(m.e.GetRoot(), h.Root) {
				rel := strings.TrimPrefix(strings.TrimPrefix(m.e.GetRoot(), h.Root), "/")
				return filepath.Join(h.MountPoint, rel), nil
			}
		}
		return "", fmt.Errorf("restore: mount %d at %s was found on the host at dump time (%s on %s) and is not there now: %w",
			m.e.GetMntId(), m.e.GetMountpoint(), m.e.GetRoot(), devName(dev), ErrExternal)
	}
	src, ok := im.keys[key]
	if !ok {
		return "", fmt.Errorf("restore: external mount %q (at %s in the container) is not given: add --external mnt[%s]:PATH or --ext-mount-map %s:PATH: %w",
			key, m.e.GetMountpoint(), key, key, ErrExternal)
	}
	if _, err := os.Stat(src); err != nil {
		return "", fmt.Errorf("restore: external mount %q (at %s in the container): %w", key, m.e.GetMountpoint(), err)
	}
	return src, nil
}

// bindSource returns a mount among made that m can be bound from: one of
// the same file system whose root holds m's root.
func (im *Image) bindSource(m *rmount, made []*rmount) *rmount {
	for _, s := range made {
		if s == m {
			break
		}
		if s.e.GetRootDev() == m.e.GetRootDev() && under(m.e.GetRoot(), s.e.GetRoot()) {
			return s
		}
	}
	return nil
}

// below is the path of m's root inside s's mount at s.target.
func below(s, m *rmount) string {
	rel := strings.TrimPrefix(strings.TrimPrefix(m.e.GetRoot(), s.e.GetRoot()), "/")
	return filepath.Join(s.target, rel)
}

// Build makes the mount tree in the new mount namespace of the restored
// root task t, which has not run yet, then makes it the root of that
// namespace (pivot_root): t, whose root was the namespace's, has the
// container's root from then on. The tree is built from a stasis thread
// that joined the namespace; proc is mounted by t itself (procfs shows
// the pid namespace of whoever mounts it). Calls into t are made on the
// caller's thread, the tracer. A failure leaves mounts only in the new
// namespace, which dies with t.
func (im *Image) Build(t remote.Task) error {
	base, err := os.MkdirTemp("", ".stasis-mntns-")
	if err != nil {
		return fmt.Errorf("restore mounts: %w", err)
	}
	yard, stage := filepath.Join(base, "root"), filepath.Join(base, "stage")
	// Empty directories in stasis' namespace (the mounts are in the
	// new one): removed one by one, never recursively.
	defer func() {
		os.Remove(yard)
		os.Remove(stage)
		os.Remove(base)
	}()
	for _, d := range []string{yard, stage} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return fmt.Errorf("restore mounts: %w", err)
		}
	}
	b := &builder{im: im, yard: yard, stage: stage, task: t, calls: make(chan func())}
	if err := b.run(b.build); err != nil {
		return fmt.Errorf("restore mounts of pid %d: %w", t.Pid(), err)
	}
	return nil
}

// run runs fn on a thread in the task's mount namespace, serving the
// calls fn sends back to this goroutine (onTracer: those that must run on
// the tracer thread), and closes the mounts' fds once it is done.
func (b *builder) run(fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- inMountNS(b.task.HostPid(), true, fn) }()
	for {
		select {
		case call := <-b.calls:
			call()
		case err := <-done:
			for _, m := range b.im.mounts {
				if m.fd != nil {
					m.fd.Close()
					m.fd = nil
				}
			}
			return err
		}
	}
}

// builder makes the tree on the thread in the new namespace.
type builder struct {
	im          *Image
	yard, stage string
	task        remote.Task
	calls       chan func()
	// proc is stasis' own /proc, for a thread whose /proc is the
	// container's (nested.go); nil: /proc is stasis'.
	proc *os.File
}

// mountinfo opens the mountinfo of the builder's thread.
func (b *builder) mountinfo() (*os.File, error) {
	if b.proc == nil {
		return os.Open("/proc/thread-self/mountinfo")
	}
	fd, err := unix.Openat(int(b.proc.Fd()), "thread-self/mountinfo", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("open mountinfo", err)
	}
	return os.NewFile(uintptr(fd), "mountinfo"), nil
}

// atFd runs fn with a path that names m's mount for mount(2): through
// /proc/self/fd, or with no /proc of stasis' (nested.go), "." once the
// thread's cwd is m's root.
func (b *builder) atFd(m *rmount, fn func(path string) error) error {
	if b.proc == nil {
		return fn(fmt.Sprintf("/proc/self/fd/%d", m.fd.Fd()))
	}
	if err := unix.Fchdir(int(m.fd.Fd())); err != nil {
		return fmt.Errorf("mount %d at %s: %w", m.e.GetMntId(), m.e.GetMountpoint(), os.NewSyscallError("fchdir", err))
	}
	defer unix.Chdir("/")
	return fn(".")
}
