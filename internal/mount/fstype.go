package mount

import (
	"strings"

	mntimg "github.com/checkpoint-restore/go-criu/v8/crit/images/mnt"
	"golang.org/x/sys/unix"
)

// fsTypes are the file systems stasis mounts again by type (criu's
// fstypes table): virtual ones, mounted afresh, and tmpfs, whose
// contents are in the images.
var fsTypes = map[string]mntimg.Fstype{
	"proc":        mntimg.Fstype_PROC,
	"sysfs":       mntimg.Fstype_SYSFS,
	"devtmpfs":    mntimg.Fstype_DEVTMPFS,
	"binfmt_misc": mntimg.Fstype_BINFMT_MISC,
	"tmpfs":       mntimg.Fstype_TMPFS,
	"devpts":      mntimg.Fstype_DEVPTS,
	"pstore":      mntimg.Fstype_PSTORE,
	"securityfs":  mntimg.Fstype_SECURITYFS,
	"fusectl":     mntimg.Fstype_FUSECTL,
	"debugfs":     mntimg.Fstype_DEBUGFS,
	"cgroup":      mntimg.Fstype_CGROUP,
	"mqueue":      mntimg.Fstype_MQUEUE,
	"overlay":     mntimg.Fstype_OVERLAYFS,
	"tracefs":     mntimg.Fstype_TRACEFS,
	"cgroup2":     mntimg.Fstype_CGROUP2,
}

// fsName is the type to mount an entry with, "" for one that can only be
// a bind mount (criu's FSTYPE__UNSUPPORTED: a disk file system).
func fsName(e *mntimg.MntEntry) string {
	t := mntimg.Fstype(e.GetFstype())
	if t == mntimg.Fstype_AUTO {
		return e.GetFsname()
	}
	for n, v := range fsTypes {
		if v == t {
			return n
		}
	}
	return ""
}

// Propagation flags as criu keeps them in an entry's flags.
const (
	msShared     = unix.MS_SHARED
	msSlave      = unix.MS_SLAVE
	msUnbindable = unix.MS_UNBINDABLE
	propagation  = msShared | msSlave | msUnbindable | unix.MS_PRIVATE
)

// mntFlags are the per-mount options of mountinfo's field 6.
var mntFlags = map[string]uint32{
	"ro":          unix.MS_RDONLY,
	"nosuid":      unix.MS_NOSUID,
	"nodev":       unix.MS_NODEV,
	"noexec":      unix.MS_NOEXEC,
	"noatime":     unix.MS_NOATIME,
	"nodiratime":  unix.MS_NODIRATIME,
	"relatime":    unix.MS_RELATIME,
	"nosymfollow": unix.MS_NOSYMFOLLOW,
}

// sbFlags are the super block options of mountinfo's last field that are
// flags, not data.
var sbFlags = map[string]uint32{
	"ro":       unix.MS_RDONLY,
	"sync":     unix.MS_SYNCHRONOUS,
	"dirsync":  unix.MS_DIRSYNC,
	"mand":     unix.MS_MANDLOCK,
	"lazytime": unix.MS_LAZYTIME,
}

// parseMntFlags turns mountinfo's per-mount options into MS_* flags.
func parseMntFlags(opts string) uint32 {
	var f uint32
	for _, o := range strings.Split(opts, ",") {
		f |= mntFlags[o]
	}
	return f
}

// parseSbOptions splits super block options into MS_* flags and the data
// string mount(2) takes ("rw" dropped, as criu does).
func parseSbOptions(opts string) (uint32, string) {
	var f uint32
	var data []string
	for _, o := range strings.Split(opts, ",") {
		if o == "" || o == "rw" {
			continue
		}
		if v, ok := sbFlags[o]; ok {
			f |= v
			continue
		}
		data = append(data, o)
	}
	return f, strings.Join(data, ",")
}
