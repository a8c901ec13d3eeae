// Package cgroup owns the cgroups of a dumped tree, both directions, as
// criu 4.2's cgroup.img describes them, and the freeze of a tree
// through its cgroup.
//
//   - hier.go: /proc/PID/task/TID/cgroup lines (a task's cgroup in each
//     hierarchy, named as criu names them: "memory", "cpu,cpuacct",
//     "name=systemd", "" for cgroup v2) and the hierarchies stasis opens:
//     a detached mount of each (fsopen/fsmount, in no mount table, so no
//     runtime beside sees a cgroup v1 hierarchy come and go), or the
//     directories of a --cgroup-yard.
//   - props.go: the properties recorded per controller (criu's list for
//     v1, the v2 globals, and the v2 limits criu 4.2 loses: memory.max,
//     cpu.weight, pids.max ...), --cgroup-props in criu's format, and
//     the properties that must be written as soon as a cgroup is made.
//   - dump.go: the Dumper. Each distinct combination of cgroups a task or
//     thread is in is a set; stasis' own is set 1 (inventory's
//     root_cg_set) and every thread's set goes into its core image
//     (thread_core.cg_set, as criu 4.2). For each new set, the tree of
//     each of its cgroups is recorded with the properties of every
//     directory; a task sharing stasis' cgroup in a hierarchy records
//     that cgroup alone. The root's cgroup namespace, if it has one, is
//     recorded as criu does: each path's cgns_prefix, read from a thread
//     that joins the namespace.
//   - restore.go: the Restorer. --manage-cgroups decides which cgroups
//     are made (soft, full, strict) or must exist (none, props), and
//     whose properties are written (those made, and every one with props
//     and full); --cgroup-root moves a tree elsewhere. Cgroups are made
//     before the first task; each process is moved in right after its
//     clone, before it maps anything, each thread right after its
//     clone (cgroup.threads, v1 tasks); a namespace's root unshares its
//     cgroup namespace from the namespace's root cgroup. What it made,
//     Rollback removes once the tasks are gone.
//   - freeze.go: --freeze-cgroup: freeze a cgroup v1 freezer
//     (freezer.state) or v2 cgroup (cgroup.freeze), list its threads,
//     thaw. The dump seizes every thread while frozen (nothing forks
//     meanwhile), then thaws, and the seized threads stop before running
//     a single instruction.
//
// Nothing here runs inside a task but the namespace's unshare, which
// goes through the Caller the restore hands in.
package cgroup
