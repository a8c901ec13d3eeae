// Package pstree is the process tree as a resource (criu's pstree.c).
//
//   - tree.go: the tree of a restore (Proc, Tree) read from pstree.img,
//     with a helper task for each session or group whose leader is gone
//     (AddHelpers), and the pids and tids it will create (AllPids);
//   - deadpid.go: a helper task with the pid of a process gone whose
//     /proc directory a file of the tree is inside (AddPidHelper);
//   - clone.go: creating a task with exactly its pids (clone3 with
//     set_tid, one pid per pid namespace level), traced from birth;
//   - threads.go: creating a process's threads many at once, each new
//     thread cloning up to eight more in the next round, as one table of
//     clone3 calls (CloneThreads);
//   - session.go: a task starting its session or group, joining its
//     group (run inside the task through remote.Task);
//   - pids.go: checking before a restore that every pid of the images is
//     free on this host and naming who holds one that is not;
//   - dump.go: the dump's side: a process's pstree.img entry, and killing
//     the seized tree once it is dumped;
//   - exit.go: ending zombies (with their exit status) and helpers once
//     the tree is built, and killing and reaping what a failed restore
//     created.
package pstree
