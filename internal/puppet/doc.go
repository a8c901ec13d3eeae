// Package puppet is the process a restore creates every task from, and
// the init a restore into a new pid namespace leaves behind.
//
// The puppet (puppet.go) is stasis' own binary exec'ed under ptrace with
// PuppetArg and held at its exec trap: it never runs an instruction of its
// own, only the system calls injected into it, and its children (the
// restored tasks, cloned by package pstree) are traced from birth and die
// with stasis. OpenChannel gives it the pidfd of stasis through which
// every task later takes its files; CloseInherited and CloseChannel close
// in a task what it inherited from the puppet.
//
// A sibling restore (the root a child of stasis' parent) takes as puppet
// the process the parent started, which splits (split.go: Split starts
// the restorer, startParent takes its parent, release lets it go to wait
// for the restorer, RunWait); a program that did not split gets a puppet
// forked with CLONE_PARENT instead (sibling.go).
//
// The init (init.go) is pid 1 of a restored pid namespace: StartInit
// execs stasis with InitArg in the namespace's first task, and RunInit is
// that exec's main loop (reap everything, exit with the root's status).
// The program's main must hand both arguments over (stasis.Reexec).
package puppet
