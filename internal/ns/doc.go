// Package ns owns the namespaces of a dumped tree, both directions, as
// criu's images describe them.
//
//   - kinds.go: the namespace kinds, criu's namespace ids (one counter for
//     every kind, stasis' own namespaces first: inventory root_ids, then
//     each new one in the order tasks are met, ids-PID's *_ns_id), which
//     kinds stasis can dump (pid, uts, ipc, net, mnt, user, time, cgroup),
//     and the refusal naming any other kind a task is in when it is not
//     stasis' own.
//   - pid.go: pid namespaces, nested too. Images hold every pid as the
//     dumped root's namespace sees it (criu's: the root of a container is
//     pid 1); a task of a namespace nested inside the tree keeps its pids
//     of the inner levels in pstree entries' extension fields (criu 4.2
//     cannot dump nested pid namespaces and ignores them), and the
//     restore clones each task with a set_tid entry per level,
//     CLONE_NEWPID for the init of each namespace.
//   - pidext.go: an external pid namespace (--external pid[INO]:KEY at
//     dump: a root that is not its namespace's init, pidns-ID.img with
//     the key only; --inherit-fd fd[N]:KEY at restore: the puppet joins
//     it before the root is cloned).
//   - uts.go: hostname and domainname (utsns-ID.img).
//   - ipc.go, ipc_shm.go, ipc_sem.go, ipc_msg.go: the IPC namespace's
//     sysctls (ipcns-var-ID.img), System V shared memory (ipcns-shm-ID.img,
//     contents in pagemap-shmem-SHMID.img as criu writes them),
//     semaphores and message queues. Their raw calls are in ipc_unsafe.go.
//   - net.go: the network namespace, whose contents are internal/netns's:
//     its dump, the root's CLONE_NEWNET (or the namespace the puppet
//     joins before the root is cloned, --join-ns net: or an external
//     key), its filling once the root made it.
//   - mqueue.go (raw calls in mqueue_unsafe.go): POSIX message queues,
//     every queue of a tree's own ipc namespace in stasis' own
//     mqueue-ID.img (criu has none), read by receiving the messages and
//     sending them back; the fd kind is internal/files' mqueue.go.
//   - user.go: user namespaces (userns-ID.img, setgroups "deny" kept in
//     an extension field), maps written from stasis right after the
//     root's clone; asNSRoot for the ipc sysctls such a namespace owns.
//   - nsfile.go: the ids of namespaces fds of the tree refer to
//     (FileID at dump, FilePath at restore: a restored task's
//     /proc/PID/ns/KIND).
//   - time.go: time namespaces (timens-ID.img: the clocks as the
//     namespace saw them), made by the puppet before the root is cloned
//     into it (BeforeRoot).
//
// A namespace is read and filled by stasis itself, from a thread that
// joins it for the time of the work and dies after
// (linux.InNamespace), never through the tasks: the tasks of a dump are
// left as they were, and the namespaces of a restore are filled right
// after the root task that creates them is cloned, before any task maps
// a System V segment or runs.
//
// As in criu, every task of the tree shares the root's uts, ipc, user
// and time namespaces; the root may be in new ones. Credentials are kept
// as the task's user namespace sees them (internal/core, userns.go). A
// cgroup namespace of the root's own is internal/cgroup's (its root is
// where the root task unshares it: NewCgroupNS); a network namespace's
// contents are internal/netns'; a mount namespace's tree is
// internal/mount's (Dumper.Check reads it with the root,
// Restorer.PrepareMounts checks the restore's options against it before
// any task exists, Restorer.Mount builds it once the root task is cloned
// with CLONE_NEWNS, before it runs).
package ns
