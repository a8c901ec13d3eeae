package rpc

import (
	"github.com/checkpoint-restore/go-criu/v8/rpc"

	"github.com/stasis-cr/stasis/internal/mount"
)

// extMountMap is ext_mnt (and auto_ext_mnt) as --ext-mount-map values:
// MOUNTPOINT:KEY at dump, KEY:PATH at restore, "auto".
func extMountMap(o *rpc.CriuOpts) []string {
	var m []string
	for _, e := range o.GetExtMnt() {
		m = append(m, e.GetKey()+":"+e.GetVal())
	}
	if o.GetAutoExtMnt() {
		m = append(m, "auto")
	}
	return m
}

// dumpMounts fills the mount options of a DUMP. root is criu's restore
// option (the directory the container's root is bound from); runc sends
// its rootfs at dump too, where the mount tree is read from the
// container's own namespace: it is logged and changes nothing.
func dumpMounts(o *rpc.CriuOpts, r *DumpRequest) {
	r.Mounts = mount.DumpOptions{
		ExtMountMap: extMountMap(o), EnableFS: o.GetEnableFs(),
		ExternalSharing: o.GetExtSharing(), ExternalMasters: o.GetExtMasters(),
	}
	if o.GetRoot() != "" && r.Log != nil {
		r.Log.Info("root at dump: the mounts are read from the tree's mount namespace", "root", o.GetRoot())
	}
}

// restoreMounts fills the mount options of a RESTORE.
func restoreMounts(o *rpc.CriuOpts, r *RestoreRequest) {
	r.Mounts = mount.RestoreOptions{Root: o.GetRoot(), ExtMountMap: extMountMap(o)}
	if r.Mounts.Root == "/" {
		r.Mounts.Root = ""
	}
}
