package mount

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	mntimg "github.com/checkpoint-restore/go-criu/v8/crit/images/mnt"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/proc"
)

// build runs on the thread that joined the new namespaces: the tree
// under b.yard, then pivot_root into it.
func (b *builder) build() error {
	// Nothing done here reaches stasis' namespace: the copies of its
	// mounts become slaves of theirs.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return os.NewSyscallError("mount --make-rslave /", err)
	}
	im := b.im
	root := im.root
	root.target = b.yard
	if err := b.mountOne(root); err != nil {
		return err
	}
	made := []*rmount{root}
	left := append([]*rmount(nil), im.mounts...)
	for len(left) > 0 {
		var next []*rmount
		for _, m := range left {
			if m == root {
				continue
			}
			if m.parent.fd == nil {
				next = append(next, m)
				continue
			}
			m.target = filepath.Join(b.yard, m.e.GetMountpoint())
			if err := b.mountOne(m); err != nil {
				return err
			}
			made = append(made, m)
		}
		if len(next) == len(left) {
			return fmt.Errorf("mount %d: its parent %d is never mounted: %w", next[0].e.GetMntId(), next[0].e.GetParentMntId(), ErrBadImage)
		}
		left = next
	}
	// Flags last, children first: a read-only parent takes no more
	// mountpoints.
	for i := len(made) - 1; i >= 0; i-- {
		if err := b.flags(made[i]); err != nil {
			return err
		}
	}
	// pivot_root refuses a shared new root: a root that is to be a slave
	// becomes one now, one that is to be shared after.
	if root.e.GetMasterId() != 0 {
		if err := b.propagation(root, "the root mount"); err != nil {
			return err
		}
	} else if g, _ := b.current(root); g != 0 {
		if err := unix.Mount("", b.yard, "", unix.MS_PRIVATE, ""); err != nil {
			return os.NewSyscallError("mount --make-private the root", err)
		}
	}
	if err := unix.Chdir(b.yard); err != nil {
		return os.NewSyscallError("chdir", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return os.NewSyscallError("pivot_root", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return os.NewSyscallError("umount the old root", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return os.NewSyscallError("chdir", err)
	}
	root.target = "/"
	if root.e.GetMasterId() != 0 {
		return nil
	}
	return b.propagation(root, "the root mount")
}

// mountOne makes mount m at m.target, its parent being made.
func (b *builder) mountOne(m *rmount) error {
	e := m.e
	what := fmt.Sprintf("mount %d at %s (%s)", e.GetMntId(), e.GetMountpoint(), fsLabel(e))
	if err := b.devptsSource(m); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if m.parent != nil {
		if err := b.mountpoint(m); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		// A mount made under a shared parent was propagated to the
		// parent's peers: the image lists that copy too, made already.
		var stx unix.Statx_t
		if err := unix.Statx(unix.AT_FDCWD, m.target, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &stx); err == nil && stx.Mnt_id != m.parent.newID {
			if !b.madeByUs(stx.Mnt_id) {
				return b.opened(m, what)
			}
		}
	}
	var err error
	switch {
	case m.source != "":
		err = b.bindOutside(m)
	default:
		if s := b.peer(m); s != nil {
			err = bind(below(s, m), m.target)
		} else if s := b.im.bindSource(m, b.im.mounts); s != nil && s.fd != nil && s != m {
			err = bind(below(s, m), m.target)
		} else {
			err = b.fresh(m)
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := b.opened(m, what); err != nil {
		return err
	}
	if m == b.im.root {
		return nil // see build
	}
	return b.propagation(m, what)
}

// madeByUs tells whether id is a mount the builder made.
func (b *builder) madeByUs(id uint64) bool {
	for _, m := range b.im.mounts {
		if m.fd != nil && m.newID == id {
			return true
		}
	}
	return false
}

// opened takes an O_PATH fd on m's root and its new id.
func (b *builder) opened(m *rmount, what string) error {
	fd, err := unix.Open(m.target, unix.O_PATH|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("%s: %w", what, os.NewSyscallError("open", err))
	}
	m.fd = os.NewFile(uintptr(fd), m.target)
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &stx); err != nil {
		return fmt.Errorf("%s: %w", what, os.NewSyscallError("statx", err))
	}
	m.newID = stx.Mnt_id
	return nil
}

func fsLabel(e *mntimg.MntEntry) string {
	if n := fsName(e); n != "" {
		return n
	}
	if e.GetExtKey() != "" {
		return "external " + e.GetExtKey()
	}
	return "bind of " + e.GetRoot()
}

// mountpoint makes m.target if it is missing: a directory, or an empty
// file for a file bound there. It must not go through a symbolic link
// (the kernel lists mountpoints resolved): an image cannot have the
// restore mount outside the tree.
func (b *builder) mountpoint(m *rmount) error {
	rel := strings.TrimPrefix(m.e.GetMountpoint(), "/")
	yfd, err := unix.Open(b.yard, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("open", err)
	}
	defer unix.Close(yfd)
	how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_BENEATH}
	fd, err := unix.Openat2(yfd, rel, how)
	if err == nil {
		unix.Close(fd)
		return nil
	}
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
		return fmt.Errorf("mountpoint %s goes through a symbolic link", m.e.GetMountpoint())
	}
	if !errors.Is(err, unix.ENOENT) {
		return os.NewSyscallError("openat2 "+m.e.GetMountpoint(), err)
	}
	dir, file := filepath.Dir(rel), false
	if m.source != "" {
		if st, err := os.Stat(m.source); err == nil && !st.IsDir() {
			file = true
		}
	} else if fsName(m.e) == "" && m.e.GetRoot() != "/" {
		if s := b.im.bindSource(m, b.im.mounts); s != nil && s.fd != nil {
			if st, err := os.Stat(below(s, m)); err == nil && !st.IsDir() {
				file = true
			}
		}
	}
	if !file {
		dir = rel
	}
	// Component by component below the yard, refusing links.
	cur, err := unix.Dup(yfd)
	if err != nil {
		return err
	}
	for _, c := range strings.Split(dir, "/") {
		if c == "" || c == "." {
			continue
		}
		if err := unix.Mkdirat(cur, c, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			unix.Close(cur)
			return os.NewSyscallError("mkdir "+m.e.GetMountpoint(), err)
		}
		nfd, err := unix.Openat2(cur, c, &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_BENEATH})
		unix.Close(cur)
		if err != nil {
			return os.NewSyscallError("open "+c+" of "+m.e.GetMountpoint(), err)
		}
		cur = nfd
	}
	defer unix.Close(cur)
	if file {
		fd, err := unix.Openat(cur, filepath.Base(rel), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o644)
		if err != nil {
			return os.NewSyscallError("create "+m.e.GetMountpoint(), err)
		}
		unix.Close(fd)
	}
	return nil
}

// bindOutside binds m from its source in stasis' namespace (an external
// mount, --root): a clone of it taken there (open_tree, on the tracer)
// and moved into the new namespace, so that it shares what the source
// shares (a peer of the host's group, a slave of its master) as the
// dumped one did.
func (b *builder) bindOutside(m *rmount) error {
	var fd int
	var err error
	b.onTracer(func() {
		fd, err = unix.OpenTree(unix.AT_FDCWD, m.source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	})
	if err != nil {
		return os.NewSyscallError("open_tree "+m.source, err)
	}
	defer unix.Close(fd)
	return os.NewSyscallError("move_mount "+m.source, unix.MoveMount(fd, "", unix.AT_FDCWD, m.target, unix.MOVE_MOUNT_F_EMPTY_PATH))
}

func bind(src, target string) error {
	return os.NewSyscallError("mount --bind "+src, unix.Mount(src, target, "", unix.MS_BIND, ""))
}

// peer returns a made mount of the peer group m must join (it is bound
// from it), or of the group m is a slave of.
func (b *builder) peer(m *rmount) *rmount {
	for _, id := range []uint32{m.e.GetSharedId(), m.e.GetMasterId()} {
		if id == 0 {
			continue
		}
		for _, s := range b.im.mounts {
			if s != m && s.fd != nil && s.e.GetSharedId() == id && s.e.GetRootDev() == m.e.GetRootDev() && under(m.e.GetRoot(), s.e.GetRoot()) {
				return s
			}
		}
	}
	return nil
}

// fresh mounts m's file system again by type; proc from the root task.
func (b *builder) fresh(m *rmount) error {
	e := m.e
	fs := fsName(e)
	if fs == "" {
		return fmt.Errorf("nothing to bind it from: %w", ErrNotSupported)
	}
	target := m.target
	if e.GetRoot() != "/" {
		target = b.stage
	}
	sbf := e.GetSbFlags() &^ unix.MS_RDONLY
	src := e.GetSource()
	var err error
	if mntimg.Fstype(e.GetFstype()) == mntimg.Fstype_PROC {
		err = b.remoteMount(src, target, fs, uintptr(sbf), e.GetOptions())
	} else {
		err = os.NewSyscallError("mount -t "+fs, unix.Mount(src, target, fs, uintptr(sbf), e.GetOptions()))
	}
	if err != nil {
		return err
	}
	if mntimg.Fstype(e.GetFstype()) == mntimg.Fstype_TMPFS {
		if err := b.untar(tarName(e.GetRootDev()), target); err != nil {
			return err
		}
	}
	if target == b.stage {
		// Only a directory of it is mounted in the container.
		err := bind(filepath.Join(b.stage, e.GetRoot()), m.target)
		if uerr := unix.Unmount(b.stage, unix.MNT_DETACH); err == nil && uerr != nil {
			err = os.NewSyscallError("umount", uerr)
		}
		return err
	}
	return nil
}

func (b *builder) untar(name, target string) error {
	// The image dir is a path of stasis' namespace: opened by the tracer.
	var f *os.File
	var err error
	has := false
	b.onTracer(func() {
		if has = b.im.dir.Has(name); has {
			f, err = b.im.dir.OpenRaw(name)
		}
	})
	if !has {
		return nil // an empty tmpfs, in images of a tool that wrote none
	}
	if err != nil {
		return err
	}
	defer f.Close()
	return restoreTmpfs(f, target, name)
}

// onTracer runs fn on the thread that called Build (stasis' namespace,
// the tracer of the root task).
func (b *builder) onTracer(fn func()) {
	done := make(chan struct{})
	b.calls <- func() { fn(); close(done) }
	<-done
}

// remoteMount makes the root task call mount(2).
func (b *builder) remoteMount(src, target, fs string, flags uintptr, data string) error {
	var err error
	b.onTracer(func() {
		t := b.task
		var addrs [4]uint64
		offs := []uint64{0, 256, 512, 1024}
		for i, s := range []string{src, fs, data, target} {
			if len(s) >= 3000 || (i < 3 && len(s) >= 250) && i != 2 {
				err = fmt.Errorf("mount of %s: argument too long", target)
				return
			}
			if addrs[i], err = t.Put(offs[i], append([]byte(s), 0)); err != nil {
				return
			}
		}
		_, err = t.Call("mount", unix.SYS_MOUNT, addrs[0], addrs[3], addrs[1], uint64(flags), addrs[2])
	})
	return err
}

// propagation gives m its peer group, master and bindability, from
// what it has now: a mount bound from a peer is in its group, one bound
// from a shared mount of its master's group is made its slave, one the
// kernel propagated a parent's mount to keeps its group, a clone of a
// source outside shares what the source shares.
func (b *builder) propagation(m *rmount, what string) error {
	e := m.e
	set := func(flag uintptr, name string) error {
		if err := unix.Mount("", m.target, "", flag, ""); err != nil {
			return fmt.Errorf("%s: %w", what, os.NewSyscallError("mount --make-"+name, err))
		}
		return nil
	}
	wantShared, wantSlave := e.GetSharedId() != 0, e.GetMasterId() != 0
	group, master := b.current(m)
	if group != 0 && wantShared {
		// The group it is in must be its own image group's, not that of
		// another made mount of another group.
		for _, n := range b.im.mounts {
			if n != m && n.group == group && n.e.GetSharedId() != e.GetSharedId() {
				group = -1
			}
		}
	}
	switch {
	case wantSlave && (master == 0 || group != 0):
		if err := set(unix.MS_SLAVE, "slave"); err != nil {
			return err
		}
		group = 0
	case !wantSlave && master != 0 || !wantShared && group != 0 || group == -1:
		if err := set(unix.MS_PRIVATE, "private"); err != nil {
			return err
		}
		group = 0
	}
	if wantShared && group == 0 {
		if err := set(unix.MS_SHARED, "shared"); err != nil {
			return err
		}
	}
	m.group, _ = b.current(m)
	if e.GetFlags()&msUnbindable != 0 {
		return set(unix.MS_UNBINDABLE, "unbindable")
	}
	return nil
}

// flags sets m's read-only and other flags, once everything below it is
// mounted: the super block's, then the mount's.
func (b *builder) flags(m *rmount) error {
	e := m.e
	p := fmt.Sprintf("/proc/self/fd/%d", m.fd.Fd())
	if e.GetSbFlags()&unix.MS_RDONLY != 0 && fsName(e) != "" && m.source == "" {
		if err := unix.Mount("", p, "", uintptr(unix.MS_REMOUNT|e.GetSbFlags()), e.GetOptions()); err != nil {
			return fmt.Errorf("mount %d at %s: %w", e.GetMntId(), e.GetMountpoint(), os.NewSyscallError("remount read-only", err))
		}
	}
	fl := e.GetFlags() &^ uint32(propagation)
	if err := unix.Mount("", p, "", uintptr(unix.MS_REMOUNT|unix.MS_BIND|fl), ""); err != nil {
		return fmt.Errorf("mount %d at %s: %w", e.GetMntId(), e.GetMountpoint(), os.NewSyscallError(fmt.Sprintf("remount with flags %#x", fl), err))
	}
	return nil
}

// current returns m's peer group and master now (0: none), from its
// line in the namespace's mountinfo.
func (b *builder) current(m *rmount) (group, master int) {
	f, err := os.Open("/proc/thread-self/mountinfo")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	infos, err := proc.ParseMountinfo(f)
	if err != nil {
		return 0, 0
	}
	for _, in := range infos {
		if uint64(in.ID) != m.newID {
			continue
		}
		for _, o := range in.Optional {
			k, v, _ := strings.Cut(o, ":")
			n, _ := strconv.Atoi(v)
			switch k {
			case "shared":
				group = n
			case "master":
				master = n
			}
		}
	}
	return group, master
}
