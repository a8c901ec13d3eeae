package restore

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// The fd channel through a socket. A task in a user namespace of its own
// cannot take files from stasis with pidfd_getfd (it needs ptrace rights
// over stasis, whose user namespace is its parent), so when the root
// creates one, the channel at channelFd is one end of a datagram
// socketpair instead of a pidfd: stasis sends each file as SCM_RIGHTS on
// its end and the task receives it with an injected recvmsg. The puppet
// takes its end with pidfd_getfd while it is still in stasis' user
// namespace; every task inherits it, as it would the pidfd.

// openSocketChannel replaces the puppet's pidfd at channelFd by its end of
// a socketpair; stasis keeps the other in r.chanSock.
func (r *restorer) openSocketChannel() error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fd channel socketpair: %w", os.NewSyscallError("socketpair", err))
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "fd channel"), os.NewFile(uintptr(fds[1]), "fd channel (tasks' end)")
	defer theirs.Close()
	p := r.puppet.Tr
	nfd, err := p.Call("pidfd_getfd", unix.SYS_PIDFD_GETFD, uint64(r.channelFd), uint64(theirs.Fd()), 0)
	if err == nil {
		if _, err = p.Call("dup2", unix.SYS_DUP2, nfd, uint64(r.channelFd)); err == nil {
			_, err = p.Call("close", unix.SYS_CLOSE, nfd)
		}
	}
	if err != nil {
		mine.Close()
		return fmt.Errorf("fd channel socket for a user namespace: %w", err)
	}
	r.chanSock = mine
	return nil
}

// passBySocket puts a copy of f into tr's process through the socket
// channel: at the lowest free fd, close-on-exec, as pidfd_getfd does.
func (tr *taskRestorer) passBySocket(f *os.File) (int, error) {
	if err := unix.Sendmsg(int(tr.r.chanSock.Fd()), []byte{0}, unix.UnixRights(int(f.Fd())), nil, 0); err != nil {
		return -1, fmt.Errorf("send %s on the fd channel: %w", f.Name(), os.NewSyscallError("sendmsg", err))
	}
	// msghdr (56 bytes), iovec (16), the data byte, the control buffer,
	// in the last 256 bytes of the scratch: the callers' own arguments
	// sit at its start.
	off := tr.s.Size - 256
	base := tr.s.Addr + off
	ctl := unix.CmsgSpace(4)
	b := make([]byte, 96+ctl)
	le := binary.LittleEndian
	le.PutUint64(b[16:], base+64)     // msg_iov
	le.PutUint64(b[24:], 1)           // msg_iovlen
	le.PutUint64(b[32:], base+96)     // msg_control
	le.PutUint64(b[40:], uint64(ctl)) // msg_controllen
	le.PutUint64(b[64:], base+80)     // iov_base
	le.PutUint64(b[72:], 1)           // iov_len
	if _, err := tr.s.Put(off, b); err != nil {
		return -1, err
	}
	if _, err := tr.t.Call("recvmsg(fd channel)", unix.SYS_RECVMSG, uint64(tr.r.channelFd), base, unix.MSG_CMSG_CLOEXEC); err != nil {
		return -1, err
	}
	got, err := tr.s.Get(off, len(b))
	if err != nil {
		return -1, err
	}
	msgs, err := unix.ParseSocketControlMessage(got[96 : 96+le.Uint64(got[40:])])
	if err == nil && len(msgs) == 1 {
		var fds []int
		if fds, err = unix.ParseUnixRights(&msgs[0]); err == nil && len(fds) == 1 {
			return fds[0], nil
		}
	}
	return -1, fmt.Errorf("pid %d: no file received on the fd channel (%v)", tr.t.Tid, err)
}
