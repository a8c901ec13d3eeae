package cgroup

import (
	"fmt"
	"strings"
)

// Mode is criu's --manage-cgroups mode: what a restore does with the
// cgroups of the images.
type Mode int

// The modes, as criu's CG_MODE_*.
const (
	// ModeSoft (the default, also --manage-cgroups without a value):
	// missing cgroups are created with their properties, existing ones
	// are used as they are.
	ModeSoft Mode = iota
	// ModeIgnore: cgroups are left alone; the tasks stay in those of the
	// restoring process.
	ModeIgnore
	// ModeNone: every cgroup must exist; tasks are moved into them,
	// no property is written.
	ModeNone
	// ModeProps: every cgroup must exist; their properties are restored.
	ModeProps
	// ModeFull: missing cgroups are created, and the properties of
	// every cgroup, existing or not, restored.
	ModeFull
	// ModeStrict: every cgroup is created; one that exists fails the
	// restore.
	ModeStrict
)

var modeNames = map[string]Mode{"soft": ModeSoft, "ignore": ModeIgnore, "none": ModeNone, "props": ModeProps, "full": ModeFull, "strict": ModeStrict}

// ParseMode parses --manage-cgroups' value; "" is the default (soft).
func ParseMode(s string) (Mode, error) {
	if s == "" {
		return ModeSoft, nil
	}
	if m, ok := modeNames[strings.ToLower(s)]; ok {
		return m, nil
	}
	return 0, fmt.Errorf("--manage-cgroups %q: want none, props, soft, full, strict or ignore: %w", s, ErrBadOption)
}

func (m Mode) String() string {
	for n, v := range modeNames {
		if v == m {
			return n
		}
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// creates tells whether the mode creates the cgroups that are missing.
func (m Mode) creates() bool { return m == ModeSoft || m == ModeFull || m == ModeStrict }

// Root is one --cgroup-root [CTRL:]PATH: the cgroups of controller
// Controller (all of them when Global) go under Path instead of where
// they were.
type Root struct {
	Controller string // "" with Global false: cgroup v2
	Global     bool
	Path       string
}

// ParseRoot parses --cgroup-root [CTRL:]PATH as criu does: a PATH alone
// applies to every controller; ":PATH" is cgroup v2's (criu names its
// hierarchy by the empty controller name).
func ParseRoot(s string) (Root, error) {
	ctl, path, found := strings.Cut(s, ":")
	r := Root{Path: path}
	if !found {
		r = Root{Global: true, Path: s}
	} else {
		r.Controller = ctl
	}
	if !strings.HasPrefix(r.Path, "/") {
		return Root{}, fmt.Errorf("--cgroup-root %q: the path must be absolute: %w", s, ErrBadOption)
	}
	return r, nil
}
