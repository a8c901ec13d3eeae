// Package files owns open files: the file table written to files.img
// (one FileEntry per open file description, also referenced by mappings,
// the exe link and cwd/root) and each task's fd table (fdinfo-N.img).
// Dump classifies every fd of a task by what it refers to; a kind stasis
// cannot restore yet is refused with an error naming the pid, fd, kind and
// target, before anything else happens to the task. Restore reads the
// file table and each task's fd table and root/cwd (read.go), opens each
// file again in stasis (restorer.go) and passes it into the task at its
// fd number (fds_task.go). Stasis holds a bounded number of them at once
// (fdbudget.go): a file a task holds is closed in stasis and taken back
// from that task with pidfd_getfd when needed again.
//
// Each kind registers its dump and open side by side (kind.go: Kind,
// Register), from a file of this package or from a package of its own
// (sockets, tty), which uses the exported helpers (DumpState,
// RestoreState, the anon-fd ones in anon.go). The steps a kind must run
// inside the restored task take a remote.Task: fds and root/cwd/umask
// (fds_task.go), file owners (fown_task.go), locks and leases
// (locks_task.go), epoll items (epoll.go), a POSIX message queue's
// notification (mqueue.go, registered by its owner from fown_task.go).
// iouring.go keeps an idle io_uring instance (an EXT entry with fields
// of stasis: geometry, counters, the rings' bytes) and makes it again in
// stasis, its counters brought back by NOPs; package mem maps its rings.
// devices.go checks that a device is dumped by a path that still names
// it (--evasive-devices). nsfile.go keeps fds of namespaces by the ids
// internal/ns gives them (Table.NsID, Restorer.NsPath); procdead.go
// files inside /proc/PID of a process gone (PROCFS remaps, DeadPids).
//
// A tree with a mount namespace of its own (a container) names its files
// as it sees them, each regular file with the mount it is on (mnt_id);
// the restore reaches them through the restored root's /proc/PID/root
// (Restorer.Root, mountns.go; internal/mount builds that namespace).
package files
