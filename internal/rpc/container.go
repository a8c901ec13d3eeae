package rpc

import (
	"fmt"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/cgroup"
	"github.com/stasis-cr/stasis/internal/netns"
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

// emptyNet reads empty_ns: only CLONE_NEWNET can be empty, as in criu.
func emptyNet(o *rpc.CriuOpts) (bool, error) {
	ns := o.GetEmptyNs()
	if ns&^uint32(unix.CLONE_NEWNET) != 0 {
		return false, fmt.Errorf("rpc: empty_ns %#x: only CLONE_NEWNET (%#x) can be empty, as in criu: %w", ns, unix.CLONE_NEWNET, ErrBadRequest)
	}
	return ns != 0, nil
}

// dumpNet fills the network namespace options of a DUMP (its external
// net[INO]:KEY come with the files' external, as on the command line).
func dumpNet(o *rpc.CriuOpts, r *DumpRequest) error {
	empty, err := emptyNet(o)
	if err != nil {
		return err
	}
	r.Net = netns.Options{Empty: empty}
	return nil
}

// restoreNet fills the network namespace options of a RESTORE: empty_ns,
// join_ns (net only), veths, weak_sysctls, and external veth[...] values;
// an external namespace's fd comes with inherit_fd.
func restoreNet(o *rpc.CriuOpts, r *RestoreRequest) error {
	empty, err := emptyNet(o)
	if err != nil {
		return err
	}
	r.Net = netns.Options{Empty: empty, WeakSysctls: o.GetWeakSysctls()}
	for _, v := range o.GetVeths() {
		r.Net.VethPairs = append(r.Net.VethPairs, v.GetIfIn()+"="+v.GetIfOut())
	}
	for _, j := range o.GetJoinNs() {
		if j.GetNs() != "net" {
			return fmt.Errorf("rpc: join_ns %s:%s: joining %s namespaces: %w (net only)", j.GetNs(), j.GetNsFile(), j.GetNs(), ErrNotImplemented)
		}
		r.Net.Join = j.GetNsFile()
	}
	for _, e := range o.GetExternal() {
		if !strings.HasPrefix(e, "veth[") || !netns.IsExternal(e) {
			return fmt.Errorf("rpc: RESTORE external %s: a restore takes veth[IFNAME]:OUT[@BRIDGE] so far (an external network namespace comes with inherit_fd): %w", e, ErrNotImplemented)
		}
		r.Net.External = append(r.Net.External, e)
	}
	return nil
}
