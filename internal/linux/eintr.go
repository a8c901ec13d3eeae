package linux

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// A system call interrupted by a signal handler returns EINTR unless the
// handler was installed with SA_RESTART. The Go runtime installs its own
// with SA_RESTART, but not every call restarts (see signal(7): reads of
// some devices, calls with a timeout, wait4 under some conditions), and a
// handler installed by cgo or a test harness may lack the flag. So the
// engine makes these calls through the wrappers below, which retry.

// retry calls f until it returns anything but EINTR.
func retry[T any](f func() (T, error)) (T, error) {
	for {
		v, err := f()
		if !errors.Is(err, unix.EINTR) {
			return v, err
		}
	}
}

// Wait4 is wait4(2), retried on EINTR. It goes through the Go scheduler,
// so a wait that may block for long (a restored tree's root) costs no
// thread; a tracer waiting for a stop uses RawWait4.
func Wait4(pid int, ws *unix.WaitStatus, options int) (int, error) {
	wpid, err := retry(func() (int, error) { return unix.Wait4(pid, ws, options, nil) })
	return wpid, os.NewSyscallError("wait4", err)
}

// Read is read(2), retried on EINTR.
func Read(fd int, p []byte) (int, error) {
	n, err := retry(func() (int, error) { return unix.Read(fd, p) })
	return n, os.NewSyscallError("read", err)
}

// Write is write(2), retried on EINTR.
func Write(fd int, p []byte) (int, error) {
	n, err := retry(func() (int, error) { return unix.Write(fd, p) })
	return n, os.NewSyscallError("write", err)
}

// WriteAll writes all of p, however many write(2) calls it takes.
func WriteAll(fd int, p []byte) error {
	for len(p) > 0 {
		n, err := Write(fd, p)
		if err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// Open is open(2), retried on EINTR (an open of a FIFO or a device may
// block, and be interrupted). Its error is an *os.PathError, as os.Open's.
func Open(path string, flags int, mode uint32) (int, error) {
	fd, err := retry(func() (int, error) { return unix.Open(path, flags, mode) })
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return fd, nil
}

// Recvfrom is recvfrom(2), retried on EINTR.
func Recvfrom(fd int, p []byte, flags int) (int, unix.Sockaddr, error) {
	type res struct {
		n    int
		from unix.Sockaddr
	}
	r, err := retry(func() (res, error) {
		n, from, err := unix.Recvfrom(fd, p, flags)
		return res{n, from}, err
	})
	return r.n, r.from, os.NewSyscallError("recvfrom", err)
}

// SendmsgN is sendmsg(2), retried on EINTR; it returns the bytes sent.
func SendmsgN(fd int, p, oob []byte, to unix.Sockaddr, flags int) (int, error) {
	n, err := retry(func() (int, error) { return unix.SendmsgN(fd, p, oob, to, flags) })
	return n, os.NewSyscallError("sendmsg", err)
}

// Sendto is sendto(2), retried on EINTR.
func Sendto(fd int, p []byte, flags int, to unix.Sockaddr) error {
	_, err := retry(func() (struct{}, error) { return struct{}{}, unix.Sendto(fd, p, flags, to) })
	return os.NewSyscallError("sendto", err)
}

// Accept4 is accept4(2), retried on EINTR.
func Accept4(fd int, flags int) (int, unix.Sockaddr, error) {
	type res struct {
		fd   int
		from unix.Sockaddr
	}
	r, err := retry(func() (res, error) {
		nfd, from, err := unix.Accept4(fd, flags)
		return res{nfd, from}, err
	})
	return r.fd, r.from, os.NewSyscallError("accept4", err)
}
