package cgroup

import (
	"fmt"
	"os"
	"strings"
)

// defaultProps are the properties criu 4.2 dumps for each cgroup v1
// controller (its built-in --cgroup-props), in its order: the order they
// are restored in (memory.limit_in_bytes before memsw, for one).
var defaultProps = map[string][]string{
	"cpu":        {"cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us", "cpu.rt_period_us", "cpu.rt_runtime_us"},
	"memory":     {"memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.swappiness", "memory.soft_limit_in_bytes", "memory.move_charge_at_immigrate", "memory.oom_control", "memory.use_hierarchy", "memory.kmem.limit_in_bytes", "memory.kmem.tcp.limit_in_bytes"},
	"cpuset":     {"cpuset.cpus", "cpuset.mems", "cpuset.memory_migrate", "cpuset.cpu_exclusive", "cpuset.mem_exclusive", "cpuset.mem_hardwall", "cpuset.memory_spread_page", "cpuset.memory_spread_slab", "cpuset.sched_load_balance", "cpuset.sched_relax_domain_level"},
	"blkio":      {"blkio.weight"},
	"freezer":    {},
	"perf_event": {},
	"net_cls":    {"net_cls.classid"},
	"net_prio":   {"net_prio.ifpriomap"},
	"pids":       {"pids.max"},
	"devices":    {"devices.list"},
}

// globalProps are dumped for every cgroup v1 directory; the value of
// cgroup.procs and tasks is not (only their owner and mode).
var globalProps = []string{"cgroup.clone_children", "notify_on_release", "cgroup.procs", "tasks"}

// globalPropsV2 are dumped for every cgroup v2 directory, as criu 4.2.
var globalPropsV2 = []string{"cgroup.subtree_control", "cgroup.max.descendants", "cgroup.max.depth", "cgroup.freeze", "cgroup.type"}

// v2Props are the limits of the cgroup v2 controllers that stasis dumps
// beyond criu 4.2 (which keeps none of them: a container's memory.max is
// lost with criu on a pure cgroup v2 host), for each controller enabled
// in a directory (its cgroup.controllers). A restore by criu writes them
// back as any other property.
var v2Props = map[string][]string{
	"memory": {"memory.min", "memory.low", "memory.high", "memory.max", "memory.swap.max", "memory.oom.group"},
	"cpu":    {"cpu.weight", "cpu.max"},
	"cpuset": {"cpuset.cpus", "cpuset.mems"},
	"pids":   {"pids.max"},
	"io":     {"io.weight"},
}

// specialProps must be written as soon as a cgroup is created, before a
// task or child enters it (criu's special_props).
var specialProps = map[string]bool{
	"cpuset.cpus": true, "cpuset.mems": true, "devices.list": true, "memory.kmem.limit_in_bytes": true,
	"memory.swappiness": true, "memory.oom_control": true, "memory.use_hierarchy": true,
}

// propTable is the properties dumped per controller: the defaults with
// --cgroup-props and --cgroup-props-file applied.
type propTable map[string][]string

func newPropTable(props, propsFile string) (propTable, error) {
	t := propTable{}
	for c, p := range defaultProps {
		t[c] = append([]string(nil), p...)
	}
	if propsFile != "" {
		b, err := os.ReadFile(propsFile)
		if err != nil {
			return nil, fmt.Errorf("--cgroup-props-file: %w", err)
		}
		if err := t.apply(string(b)); err != nil {
			return nil, fmt.Errorf("--cgroup-props-file %s: %w", propsFile, err)
		}
	}
	if props != "" {
		if err := t.apply(props); err != nil {
			return nil, fmt.Errorf("--cgroup-props: %w", err)
		}
	}
	return t, nil
}

// apply reads criu's description of controller properties:
//
//	"memory":
//	 - "strategy": "merge"
//	 - "properties": [ "memory.limit_in_bytes", "memory.high" ]
//
// "replace" sets the controller's list, "merge" adds to it.
func (t propTable) apply(text string) error {
	unq := func(s string) string { return strings.Trim(strings.TrimSpace(s), `"'`) }
	var ctl, strategy string
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !strings.HasPrefix(line, "-") {
			if !strings.HasSuffix(line, ":") {
				return fmt.Errorf("line %d %q: want \"CONTROLLER\": : %w", i+1, line, ErrBadOption)
			}
			ctl, strategy = unq(strings.TrimSuffix(line, ":")), ""
			continue
		}
		if ctl == "" {
			return fmt.Errorf("line %d %q: no controller before it: %w", i+1, line, ErrBadOption)
		}
		key, val, ok := strings.Cut(strings.TrimSpace(strings.TrimPrefix(line, "-")), ":")
		if !ok {
			return fmt.Errorf("line %d %q: want KEY: VALUE: %w", i+1, line, ErrBadOption)
		}
		switch unq(key) {
		case "strategy":
			strategy = unq(val)
			if strategy != "merge" && strategy != "replace" {
				return fmt.Errorf("controller %s: unknown strategy %q (merge or replace): %w", ctl, strategy, ErrBadOption)
			}
		case "properties":
			if strategy == "" {
				return fmt.Errorf("controller %s: \"strategy\" must come before \"properties\": %w", ctl, ErrBadOption)
			}
			// The list may run over several lines.
			for !strings.Contains(val, "]") && i+1 < len(lines) {
				i++
				val += " " + lines[i]
			}
			val = strings.TrimSpace(val)
			if !strings.HasPrefix(val, "[") || !strings.HasSuffix(val, "]") {
				return fmt.Errorf("controller %s: properties %q: want [ \"a\", \"b\" ]: %w", ctl, val, ErrBadOption)
			}
			var list []string
			for _, p := range strings.Split(strings.Trim(val, "[]"), ",") {
				if p = unq(p); p != "" {
					list = append(list, p)
				}
			}
			if strategy == "replace" {
				t[ctl] = list
				continue
			}
			for _, p := range list {
				if !hasString(t[ctl], p) {
					t[ctl] = append(t[ctl], p)
				}
			}
		default:
			return fmt.Errorf("controller %s: unknown key %q (strategy, properties): %w", ctl, unq(key), ErrBadOption)
		}
	}
	return nil
}

func hasString(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
