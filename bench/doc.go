// Command bench measures `stasis dump` and `stasis restore` on a tiny and a
// large victim and prints every figure next to the limit this machine
// showed in the same run (memcpy, page-cache file write and read), with
// the targets. It also scales them: one process with 1,000 and
// 10,000 threads, and a tree of 50 processes with 64 MiB of memory each,
// every one checked after its restore, with the phases cut from the
// commands' -v4 logs. -only selects groups. See README.md for how to read
// the table.
//
// It owns the victims it starts (children, own session, no fds but
// /dev/null), the processes they fork and the processes stasis restores
// from them: bench is a child subreaper, so restored victims and orphaned
// processes of a victim's tree become its children, and it kills and reaps
// each of them by pid. Nothing else is ever signalled.
//
// Threads: measurements run on the main goroutine. The in-process profile
// calls stasis.Dump and stasis.Restore, which lock their own OS thread;
// no goroutine of bench waits for children meanwhile, because a waiter in
// the tracer's thread group would steal the tracee's ptrace stops.
package main
