// Package restore brings a checkpoint back: it is the orchestrator, the
// list of phases a restore goes through, and leaves each resource's work
// to the package that owns it.
//
//   - images (images.go): read and cross-check every image before
//     anything is created; files (files.ReadImages, files.ReadTask), the
//     tree (pstree.ReadImage, pstree.Tree), memory (mem.ReadImage) and
//     namespaces (ns.go, internal/ns) read their own.
//   - tree (restore.go createTree, process.go create): start the puppet
//     (internal/puppet) and create each task from its real parent with
//     its original pids (pstree.CloneWithPids), helpers for dead session
//     and group leaders included (pstree.AddHelpers), and for the pids
//     of /proc files of processes gone (pstree.AddPidHelper); a child
//     sharing its parent's fd table is cloned with CLONE_FILES
//     (sharedfdt.go), its fs info with CLONE_FS (sharedfs.go); a task gets its
//     address space (mem, through remote.Task) before its children are
//     cloned from it.
//   - per process, parents first (restore.go run, process.go): groups,
//     controlling terminals (tty), threads, files (files' task-side steps:
//     fds, root/cwd, owners, locks), exits of zombies and helpers
//     (pstree), task state and credentials (core), resume.
//
// Every task-side step gets the task as a remote.Task (remote.go:
// taskRestorer); the orchestrator keeps only the injection page
// (task.go). There is no restorer blob.
//
// Any failure kills every task created so far: a restore either completes
// or leaves nothing behind. All of it runs on one locked OS thread (see
// package ptrace).
package restore
