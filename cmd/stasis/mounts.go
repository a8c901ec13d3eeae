package main

import (
	"github.com/spf13/pflag"

	"github.com/stasis-cr/stasis"
)

// addMountDumpFlags gives dump criu's options about a container's mounts
// (--external mnt[MOUNTPOINT]:KEY is --external's).
func addMountDumpFlags(f *pflag.FlagSet, o *stasis.MountDumpOptions) {
	f.StringArrayVarP(&o.ExtMountMap, "ext-mount-map", "M", nil, "MOUNTPOINT:KEY: the container's mount at MOUNTPOINT is bound from outside it, given again at restore under KEY; or auto (repeatable)")
	f.StringSliceVar(&o.EnableFS, "enable-fs", nil, "FSTYPE[,FSTYPE...]: mounts of these types are mounted again by type, source and options at restore")
	f.BoolVar(&o.ExternalSharing, "enable-external-sharing", false, "accept mounts in a peer group with mounts outside the container")
	f.BoolVar(&o.ExternalMasters, "enable-external-masters", false, "accept mounts that are slaves of a peer group outside the container")
}

// addMountRestoreFlags gives restore criu's options about a container's
// mounts.
func addMountRestoreFlags(f *pflag.FlagSet, o *stasis.MountRestoreOptions) {
	f.StringVarP(&o.Root, "root", "r", "", "the directory the container's root mount is bound from (its rootfs)")
	f.StringArrayVarP(&o.ExtMountMap, "ext-mount-map", "M", nil, "KEY:PATH: the external mount KEY of the dump is bound from PATH (repeatable)")
}
