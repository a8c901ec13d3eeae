package sockets

import (
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// sock_diag answers for the network namespace of its own socket: the
// sockets of a tree with a network namespace of its own are listed by a
// diag socket made there, from a thread that joins the namespace of one
// of them (SIOCGSKNS) and dies after.

// diagSocket opens a NETLINK_SOCK_DIAG socket in the network namespace
// of socket sk (stasis' own for -1).
func diagSocket(sk int) (int, error) {
	open := func() (int, error) {
		s, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
		return s, os.NewSyscallError("socket", err)
	}
	if sk < 0 {
		return open()
	}
	ns, err := unix.IoctlRetInt(sk, unix.SIOCGSKNS)
	if err != nil {
		return open() // a kernel without SIOCGSKNS has one namespace for stasis
	}
	defer unix.Close(ns)
	var theirs, ours unix.Stat_t
	if unix.Fstat(ns, &theirs) == nil && unix.Stat("/proc/thread-self/ns/net", &ours) == nil && theirs.Ino == ours.Ino {
		return open()
	}
	type res struct {
		fd  int
		err error
	}
	done := make(chan res, 1)
	go func() {
		// Never unlocked: the thread ends with the goroutine.
		runtime.LockOSThread()
		if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
			done <- res{-1, os.NewSyscallError("setns", err)}
			return
		}
		fd, err := open()
		done <- res{fd, err}
	}()
	r := <-done
	return r.fd, r.err
}
