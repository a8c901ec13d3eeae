// Package mount owns the mount namespace of a container, both
// directions, in criu's images: mountpoints-ID.img (one MntEntry per
// mount, mountinfo's order reversed as criu writes it) and
// tmpfs-dev-N.tar.gz.img (the contents of each tmpfs, a gzip'ed GNU tar
// of its root, N its device number as the kernel keeps it).
//
//   - dump.go: Read takes the dumped root's /proc/PID/mountinfo, fills an
//     entry per mount (type, flags, super block flags and options, peer
//     group and master, external key) and refuses, naming the mount and
//     the flag that would accept it, what the restore could not make
//     again: a file system not mounted by type (not --enable-fs), a bind
//     mount from outside the container no --external mnt[] /
//     --ext-mount-map names (or auto finds on the host), sharing with
//     mounts outside it (--enable-external-sharing/masters). Write writes
//     the image and archives each tmpfs from a detached copy of it
//     (open_tree), so that files under mounts on top are kept.
//   - restore.go: Load checks the image forms one tree; Prepare resolves
//     --root and each external key (a missing one is an error naming the
//     key, before any task exists); Build runs the builder.
//   - build.go: the tree made in the new mount namespace of the restored
//     root task, which has not run yet: parents first, each mount bound
//     (from an external source, a peer, a mount of the same file system)
//     or mounted by type (tmpfs then filled), its propagation set as it
//     is made (a peer joins its group by being bound from it, a slave is
//     bound from its master's group then made slave, a copy the kernel
//     propagated is adopted), flags last, children first; then
//     pivot_root into it. proc is mounted by the root task itself
//     (procfs shows the pid namespace of whoever mounts it).
//   - tar.go: the tmpfs archives, both ways; extraction resolves every
//     name inside the tmpfs (openat2 RESOLVE_IN_ROOT).
//   - thread.go: the throwaway thread that joins a mount namespace (and,
//     for the restore, the root's ipc, network and cgroup namespaces:
//     mqueue, sysfs and cgroup mounts take the mounter's).
//   - options.go: criu's flags about mounts.
//
// Threads: Build's builder runs on its own OS thread, which dies after;
// what must run in stasis' namespace or on the tracer thread (opening
// images, the root task's mount(2)) is sent back to Build's caller.
// Files of the container are named as it sees them; internal/files
// reaches them through the root task's /proc/PID/root (Restorer.Root).
package mount
