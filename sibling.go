package stasis

import "github.com/stasis-cr/stasis/internal/puppet"

// SplitSibling prepares a sibling restore (RestoreOptions.Sibling) the
// way criu performs one: the process that calls it becomes the puppet
// the root is cloned from, so that its parent (LXC, runc) gets the root
// as its next child and no other. It starts this program again with
// command line args (the restorer, which must perform the same restore;
// SiblingRestorer is true there) and returns the restorer's exit status
// if the restorer ends before taking this process; otherwise this
// process becomes the puppet and, once the root exists, waits for the
// restorer and exits with its status: SplitSibling does not return. It
// must be called on the main thread (lock it with runtime.LockOSThread
// in an init of package main), and the program must call Reexec first
// thing in main.
//
// Without it, a sibling restore starts its puppet as a process of its
// own, which the parent finds as a zombie child listed before the root.
func SplitSibling(args []string) (code int, err error) { return puppet.Split(args) }

// SiblingRestorer tells whether this process is the restorer that
// SplitSibling started: its sibling restore takes its parent as the
// puppet, and it must not split again.
func SiblingRestorer() bool { return puppet.Restorer() }
