package files

import (
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/proc"
)

// A tree with a mount namespace of its own (a container) names its files
// as it sees them: the kernel's links show paths from the namespace's
// root, and criu's entries keep them with the id of the mount they are
// on (mnt_id). The restore reaches them through the restored root
// task's root (Restorer.Root).

// MountNS is the mount namespace of a dumped tree that has its own.
type MountNS interface {
	// Has tells whether mount id is one of the namespace's.
	Has(id int) bool
	// Root is where stasis reaches the namespace's root.
	Root() string
}

// setMount records on a regular-file entry the mount its file is on,
// and refuses a file on a mount outside the tree's namespace (criu
// cannot look it up either): the restore could not name it. src opens
// the file (an fd's or a /proc link), mntID is its mount if known (-1).
func (t *Table) setMount(fe *fdinfo.FileEntry, src string, mntID int) error {
	if t.Mounts == nil || fe.GetReg() == nil {
		return nil
	}
	if mntID < 0 {
		var err error
		if mntID, err = mountOf(src); err != nil {
			return err
		}
	}
	if !t.Mounts.Has(mntID) {
		// Opened before the namespace was made (stdio left by unshare):
		// the same file under the same name in the namespace will do.
		mntID = t.sameIn(src, fe.GetReg().GetName())
	}
	if !t.Mounts.Has(mntID) {
		return fmt.Errorf("%s (%s) is on mount %d, outside the tree's mount namespace: %w", src, fe.GetReg().GetName(), mntID, ErrUnsupported)
	}
	fe.Reg.MntId = proto.Int32(int32(mntID))
	return nil
}

// mountOf returns the id of the mount the file src opens is on.
func mountOf(src string) (int, error) {
	fd, err := unix.Open(src, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("mount of %s: %w", src, os.NewSyscallError("open", err))
	}
	fi, err := proc.ReadFdinfo(os.Getpid(), fd)
	unix.Close(fd)
	if err != nil {
		return -1, fmt.Errorf("mount of %s: %w", src, err)
	}
	return fi.MntID, nil
}

// nestedMounts tells whether the tree has mount namespaces nested in its
// own: one name may then be two files, or one directory on two mounts
// (a task's root), and the mount tells them apart.
func (t *Table) nestedMounts() bool {
	n, ok := t.Mounts.(interface{ Nested() bool })
	return ok && n.Nested()
}

// procRoot matches a path into a restored mount namespace: below a
// task's root, through /proc (Restorer.Root).
var procRoot = regexp.MustCompile(`^/proc/[0-9]+/root(/|$)`)

// InRoot is where stasis reaches name, a path of the restored tree.
func (r *Restorer) InRoot(name string) string { return r.inRoot(name) }

// inRootOf is inRoot for a file on mount mntID, which may be in a mount
// namespace nested in the tree's (RootOf).
func (r *Restorer) inRootOf(name string, mntID int32) string {
	if r.RootOf == nil || r.Root == "" || !strings.HasPrefix(name, "/") {
		return r.inRoot(name)
	}
	return r.RootOf(mntID, r.Root) + name
}

func (r *Restorer) inRoot(name string) string {
	if r.Root == "" || !strings.HasPrefix(name, "/") {
		return name
	}
	return r.Root + name
}

// sameIn returns the mount of the namespace where name is, if it is the
// file src opens, -1 otherwise.
func (t *Table) sameIn(src, name string) int {
	var st unix.Stat_t
	var stx unix.Statx_t
	if unix.Stat(src, &st) != nil || unix.Statx(unix.AT_FDCWD, t.Mounts.Root()+name, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID|unix.STATX_INO, &stx) != nil {
		return -1
	}
	if stx.Ino != st.Ino || unix.Mkdev(stx.Dev_major, stx.Dev_minor) != st.Dev {
		return -1
	}
	return int(stx.Mnt_id)
}
