// Package pstree is the process tree as a resource (criu's pstree.c):
// creating a task with exactly its pids (clone.go: clone3 with set_tid,
// one pid per pid namespace level, traced from birth), checking before a
// restore that every pid of the images is free on this host and naming
// who holds one that is not (pids.go), and killing a task the restore
// created.
package pstree
