package rpc

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/rpc"

	"github.com/stasis-cr/stasis/internal/cgroup"
)

// The container options of criu_opts (what runc, podman and containerd
// set) in the terms of stasis' cgroup, mount and netns packages, as
// criu's cr-service.c reads them.

// cgroupMode is criu's reading of manage_cgroups and manage_cgroups_mode:
// unset is the default (soft), manage_cgroups false is ignore, a mode
// given wins.
func cgroupMode(o *rpc.CriuOpts) (cgroup.Mode, error) {
	mode := cgroup.ModeSoft
	if o.ManageCgroups != nil && !o.GetManageCgroups() {
		mode = cgroup.ModeIgnore
	}
	if o.ManageCgroupsMode == nil {
		return mode, nil
	}
	switch o.GetManageCgroupsMode() {
	case rpc.CriuCgMode_IGNORE:
		return cgroup.ModeIgnore, nil
	case rpc.CriuCgMode_CG_NONE:
		return cgroup.ModeNone, nil
	case rpc.CriuCgMode_PROPS:
		return cgroup.ModeProps, nil
	case rpc.CriuCgMode_SOFT, rpc.CriuCgMode_DEFAULT:
		return cgroup.ModeSoft, nil
	case rpc.CriuCgMode_FULL:
		return cgroup.ModeFull, nil
	case rpc.CriuCgMode_STRICT:
		return cgroup.ModeStrict, nil
	}
	return 0, fmt.Errorf("rpc: manage_cgroups_mode %v: %w", o.GetManageCgroupsMode(), ErrBadRequest)
}

func cgroupRoots(o *rpc.CriuOpts) ([]cgroup.Root, error) {
	var roots []cgroup.Root
	for _, r := range o.GetCgRoot() {
		s := r.GetPath()
		if r.Ctrl != nil {
			s = r.GetCtrl() + ":" + s
		}
		root, err := cgroup.ParseRoot(s)
		if err != nil {
			return nil, fmt.Errorf("rpc: cg_root: %w", err)
		}
		roots = append(roots, root)
	}
	return roots, nil
}

// dumpCgroups fills the cgroup options of a DUMP.
func dumpCgroups(o *rpc.CriuOpts, r *DumpRequest) error {
	mode, err := cgroupMode(o)
	if err != nil {
		return err
	}
	roots, err := cgroupRoots(o)
	if err != nil {
		return err
	}
	r.Cgroups = cgroup.DumpOptions{
		Mode: mode, Roots: roots, Props: o.GetCgroupProps(), PropsFile: o.GetCgroupPropsFile(),
		Controllers: o.GetCgroupDumpController(), Yard: o.GetCgroupYard(), FreezeCgroup: o.GetFreezeCgroup(),
	}
	return nil
}

// restoreCgroups fills the cgroup options of a RESTORE.
func restoreCgroups(o *rpc.CriuOpts, r *RestoreRequest) error {
	mode, err := cgroupMode(o)
	if err != nil {
		return err
	}
	roots, err := cgroupRoots(o)
	if err != nil {
		return err
	}
	r.Cgroups = cgroup.RestoreOptions{Mode: mode, Roots: roots, Yard: o.GetCgroupYard()}
	return nil
}
