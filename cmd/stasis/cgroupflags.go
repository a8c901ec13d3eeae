package main

import (
	"github.com/spf13/pflag"

	"github.com/stasis-cr/stasis"
)

// cgroupFlags are criu's cgroup options of dump and restore.
type cgroupFlags struct {
	mode  string
	roots []string
	yard  string
}

func (c *cgroupFlags) registerCommon(f *pflag.FlagSet) {
	f.StringVar(&c.mode, "manage-cgroups", "", "what is done with cgroups: none, props, soft (the default, also without a value), full, strict or ignore")
	f.Lookup("manage-cgroups").NoOptDefVal = "soft"
	f.StringArrayVar(&c.roots, "cgroup-root", nil, "[CTRL:]PATH: the cgroups of controller CTRL (all without it, v2 with an empty CTRL) go under PATH (repeatable)")
	f.StringVar(&c.yard, "cgroup-yard", "", "a directory holding every cgroup hierarchy mounted (memory, cpu,cpuacct, systemd, unified...) instead of stasis' own detached mounts")
}

func (c *cgroupFlags) registerDump(f *pflag.FlagSet, o *stasis.CgroupDumpOptions) {
	c.registerCommon(f)
	f.StringVar(&o.Props, "cgroup-props", "", "the cgroup properties to dump per controller, in criu's format (\"memory\": - \"strategy\": \"merge\" - \"properties\": [ ... ])")
	f.StringVar(&o.PropsFile, "cgroup-props-file", "", "a file holding --cgroup-props")
	f.StringArrayVar(&o.Controllers, "cgroup-dump-controller", nil, "dump only this controller's cgroups (repeatable)")
	f.StringVar(&o.FreezeCgroup, "freeze-cgroup", "", "freeze the tree through this cgroup (a cgroup v1 freezer or cgroup v2 directory) before seizing it")
}

func (c *cgroupFlags) registerRestore(f *pflag.FlagSet) { c.registerCommon(f) }

func (c *cgroupFlags) common() (stasis.CgroupMode, []stasis.CgroupRoot, error) {
	mode, err := stasis.ParseCgroupMode(c.mode)
	if err != nil {
		return 0, nil, err
	}
	var roots []stasis.CgroupRoot
	for _, r := range c.roots {
		root, err := stasis.ParseCgroupRoot(r)
		if err != nil {
			return 0, nil, err
		}
		roots = append(roots, root)
	}
	return mode, roots, nil
}

func (c *cgroupFlags) applyDump(o *stasis.CgroupDumpOptions) error {
	var err error
	o.Mode, o.Roots, err = c.common()
	o.Yard = c.yard
	return err
}

func (c *cgroupFlags) applyRestore(o *stasis.CgroupRestoreOptions) error {
	var err error
	o.Mode, o.Roots, err = c.common()
	o.Yard = c.yard
	return err
}
