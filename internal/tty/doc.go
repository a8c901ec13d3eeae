// Package tty owns terminals both ways, as criu's tty.c does: the fd kind
// "tty" (tty.go: pty pairs, /dev/tty, a shell job's terminal, external
// terminals; hangup.go: a slave whose master was closed; tty-info.img and tty-data.img), registered with the fd
// registry of package files from its init, like a database/sql driver
// (package dump imports it for that), and the controlling terminals
// (ctty.go: the session leader takes its terminal, each terminal gets its
// foreground group, -j hands stasis' own terminal to the tree), which
// package restore calls with the restored tasks as remote.Task.
//
// Everything that touches a restored task runs on the tracer thread (see
// package ptrace).
package tty
