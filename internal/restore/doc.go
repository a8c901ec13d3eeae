// Package restore brings a checkpoint back. It starts a "puppet" - stasis'
// own binary, exec'ed under ptrace and held at its first instruction - and
// from it creates each task with its original PID by an injected clone3
// with set_tid. Every task is then turned into its image by injected
// system calls: its inherited address space is unmapped, each VMA mapped
// at its address and filled from the pages image, the vDSO moved (by
// package mem, which gets the task as a remote.Task), fds
// passed in with pidfd_getfd, and its task state set; registers come last,
// and the task is let go. There is no restorer blob.
//
// Any failure kills every task created so far: a restore either completes
// or leaves nothing behind. All of it runs on one locked OS thread (see
// package ptrace).
package restore
