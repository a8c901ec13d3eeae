package mount

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	mntimg "github.com/checkpoint-restore/go-criu/v8/crit/images/mnt"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/proc"
)

// Tree is the mount namespace of a dumped tree, read from the mountinfo
// of its root task, checked, and written as criu's mountpoints-ID.img
// with the contents of its tmpfs mounts.
type Tree struct {
	pid    int
	mounts []*mount // mountinfo order: parents before children
	byID   map[int]*mount
	root   *mount
	// nested are the trees of mount namespaces nested in this one
	// (nested.go).
	nested []*Tree
}

type mount struct {
	info proc.Mount
	e    *mntimg.MntEntry
	tar  bool // the tmpfs whose contents are dumped for its super block
}

// kdev is a device number as the kernel keeps it (criu's root_dev,
// tmpfs-dev-N): major in the upper 12 bits.
func kdev(major, minor uint32) uint32 { return major<<20 | minor }

// Read reads and checks the mount namespace of process pid: each mount
// must be one the restore can make again (a file system mounted by type,
// tmpfs with its contents, a bind mount of another mount of the
// container, the root, or an external mount named by the options). The
// refusal names the mount, its type and the flag that would accept it.
func Read(pid int, opts DumpOptions) (*Tree, error) {
	keys, auto, err := opts.dumpKeys()
	if err != nil {
		return nil, err
	}
	infos, err := proc.ReadMountinfo(pid)
	if err != nil {
		return nil, fmt.Errorf("mounts of pid %d: %w", pid, err)
	}
	host, err := proc.ReadMountinfo(os.Getpid())
	if err != nil {
		return nil, fmt.Errorf("stasis' own mounts: %w", err)
	}
	t := &Tree{pid: pid, byID: map[int]*mount{}}
	for _, in := range infos {
		m := &mount{info: in}
		t.mounts = append(t.mounts, m)
		t.byID[in.ID] = m
	}
	for _, m := range t.mounts {
		if t.byID[m.info.ParentID] == nil {
			if t.root != nil {
				return nil, fmt.Errorf("mounts of pid %d: two mounts without a parent in the namespace, %d (%s) and %d (%s): %w",
					pid, t.root.info.ID, t.root.info.MountPoint, m.info.ID, m.info.MountPoint, ErrNotSupported)
			}
			t.root = m
		}
	}
	if t.root == nil {
		return nil, fmt.Errorf("mounts of pid %d: no root mount in its mountinfo", pid)
	}
	hostShared := map[string]bool{}
	for _, h := range host {
		for _, o := range h.Optional {
			if strings.HasPrefix(o, "shared:") {
				hostShared[strings.TrimPrefix(o, "shared:")] = true
			}
		}
	}
	shared := map[string]bool{}
	for _, m := range t.mounts {
		for _, o := range m.info.Optional {
			if strings.HasPrefix(o, "shared:") {
				shared[strings.TrimPrefix(o, "shared:")] = true
			}
		}
	}
	tarred := map[uint32]bool{}
	for i, m := range t.mounts {
		if err := t.entry(m, t.mounts[:i], keys, auto, host, opts); err != nil {
			return nil, err
		}
		// The root and external mounts are bound from outside anyway:
		// their sharing with the host is kept as it is (as criu does).
		outside := m == t.root || m.e.ExtKey != nil
		for _, o := range m.info.Optional {
			g, id, _ := strings.Cut(o, ":")
			switch g {
			case "shared":
				if hostShared[id] && !opts.ExternalSharing && !outside {
					return nil, fmt.Errorf("mount %d at %s is in peer group %s, shared with mounts outside the container: give --enable-external-sharing (as criu): %w",
						m.info.ID, m.info.MountPoint, id, ErrNotSupported)
				}
			case "master":
				if !shared[id] && !opts.ExternalMasters && !outside {
					return nil, fmt.Errorf("mount %d at %s is a slave of peer group %s, outside the container: give --enable-external-masters (as criu): %w",
						m.info.ID, m.info.MountPoint, id, ErrNotSupported)
				}
			}
		}
		if mntimg.Fstype(m.e.GetFstype()) == mntimg.Fstype_TMPFS && m.e.ExtKey == nil {
			dev := m.e.GetRootDev()
			if !tarred[dev] {
				if m.info.Root != "/" {
					return nil, fmt.Errorf("mount %d at %s: a tmpfs mounted from its directory %s with no mount of its root in the container: %w",
						m.info.ID, m.info.MountPoint, m.info.Root, ErrNotSupported)
				}
				tarred[dev], m.tar = true, true
			}
		}
	}
	return t, nil
}

// entry fills the image entry of m, refusing a mount the restore could
// not make again. before are the mounts listed before it.
func (t *Tree) entry(m *mount, before []*mount, keys map[string]string, auto bool, host []proc.Mount, opts DumpOptions) error {
	in := m.info
	sbf, data := parseSbOptions(in.SuperOptions)
	flags := parseMntFlags(in.Options)
	e := &mntimg.MntEntry{
		MntId:       proto.Uint32(uint32(in.ID)),
		RootDev:     proto.Uint32(kdev(in.Major, in.Minor)),
		ParentMntId: proto.Uint32(uint32(in.ParentID)),
		Root:        proto.String(in.Root),
		Mountpoint:  proto.String(in.MountPoint),
		Source:      proto.String(in.Source),
		SharedId:    proto.Uint32(0),
		MasterId:    proto.Uint32(0),
		SbFlags:     proto.Uint32(sbf),
	}
	for _, o := range in.Optional {
		g, id, _ := strings.Cut(o, ":")
		n, _ := strconv.Atoi(id)
		switch g {
		case "shared":
			e.SharedId = proto.Uint32(uint32(n))
			flags |= msShared
		case "master":
			e.MasterId = proto.Uint32(uint32(n))
			flags |= msSlave
		case "unbindable":
			flags |= msUnbindable
		}
	}
	e.Flags = proto.Uint32(flags)
	fst, known := fsTypes[in.FSType]
	if !known && slices.Contains(opts.EnableFS, in.FSType) {
		fst, known = mntimg.Fstype_AUTO, true
		e.Fsname = proto.String(in.FSType)
	}
	e.Fstype = proto.Uint32(uint32(fst))
	if fst == mntimg.Fstype_DEVPTS && !strings.Contains(data, "newinstance") {
		// Each container's devpts is an instance of its own.
		data = strings.TrimPrefix(data+",newinstance", ",")
	}
	e.Options = proto.String(data)
	m.e = e
	if key, ok := keys[in.MountPoint]; ok {
		e.ExtKey = proto.String(key)
		return nil
	}
	if m == t.root || (known && fst != mntimg.Fstype_TMPFS) {
		return nil
	}
	for _, b := range before {
		if b.info.Major == in.Major && b.info.Minor == in.Minor && under(in.Root, b.info.Root) {
			return nil // a bind mount of b
		}
	}
	if fst == mntimg.Fstype_TMPFS {
		return nil // the first mount of its tmpfs
	}
	if auto {
		for _, h := range host {
			if h.Major == in.Major && h.Minor == in.Minor && under(in.Root, h.Root) {
				e.ExtKey = proto.String(Autodetected)
				return nil
			}
		}
	}
	if in.Major == 0 {
		return fmt.Errorf("mount %d at %s: file system %s is %w: name it with --external mnt[%s]:KEY to bind it from the host at restore, or --enable-fs %s to mount it again by type",
			in.ID, in.MountPoint, in.FSType, ErrNotSupported, in.MountPoint, in.FSType)
	}
	return fmt.Errorf("mount %d at %s: a bind mount of %s (%s on %d:%d) from outside the container is %w: name it with --external mnt[%s]:KEY or --ext-mount-map %s:KEY, or give --ext-mount-map auto",
		in.ID, in.MountPoint, in.Root, in.FSType, in.Major, in.Minor, ErrNotSupported, in.MountPoint, in.MountPoint)
}

// under tells whether path p is dir or below it.
func under(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

// Has tells whether mount id is one of the namespace's (fdinfo mnt_id).
func (t *Tree) Has(id int) bool {
	if t.byID[id] != nil {
		return true
	}
	for _, n := range t.nested {
		if n.Has(id) {
			return true
		}
	}
	return false
}

// Root is where stasis reaches the namespace's root: the dumped root
// task's root directory, through /proc.
func (t *Tree) Root() string { return fmt.Sprintf("/proc/%d/root", t.pid) }

// ImageName is the name of the mount image of namespace id.
func ImageName(id uint32) string { return fmt.Sprintf("mountpoints-%d.img", id) }

// tarName is the name of the contents of the tmpfs of device dev.
func tarName(dev uint32) string { return fmt.Sprintf("tmpfs-dev-%d.tar.gz.img", dev) }

// Write writes mountpoints-ID.img (criu's order: mountinfo's reversed)
// and the contents of each tmpfs, read from a thread in the namespace
// so that each is read without the mounts on top of it.
func (t *Tree) Write(dir *images.Dir, id uint32) error {
	es := make([]proto.Message, 0, len(t.mounts))
	for i := len(t.mounts) - 1; i >= 0; i-- {
		es = append(es, t.mounts[i].e)
	}
	if err := dir.Write(ImageName(id), es...); err != nil {
		return err
	}
	// A detached copy of each tmpfs mount alone (open_tree, which takes
	// a mount of the caller's namespace), walked from stasis' own
	// threads through its fd: the image dir is a path of stasis'
	// namespace, and the files under a mount on top are read too.
	var trees []*os.File
	defer func() {
		for _, f := range trees {
			f.Close()
		}
	}()
	err := inMountNS(t.pid, false, func() error {
		for _, m := range t.mounts {
			if !m.tar {
				continue
			}
			fd, err := unix.OpenTree(unix.AT_FDCWD, m.info.MountPoint, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
			if errors.Is(err, unix.EINVAL) {
				// An unbindable mount cannot be cloned: read in place,
				// without what mounts on top of it hide.
				fd, err = unix.Open(m.info.MountPoint, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			}
			if err != nil {
				return fmt.Errorf("tmpfs mount %d at %s: %w", m.info.ID, m.info.MountPoint, os.NewSyscallError("open_tree", err))
			}
			trees = append(trees, os.NewFile(uintptr(fd), m.info.MountPoint))
		}
		return nil
	})
	if err != nil {
		return err
	}
	i := 0
	for _, m := range t.mounts {
		if !m.tar {
			continue
		}
		if err := dumpTmpfs(dir, fmt.Sprintf("/proc/self/fd/%d", trees[i].Fd()), tarName(m.e.GetRootDev())); err != nil {
			return fmt.Errorf("contents of tmpfs mount %d at %s: %w", m.info.ID, m.info.MountPoint, err)
		}
		i++
	}
	return nil
}
