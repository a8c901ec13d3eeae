package sockets

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/files"
)

// Sockets: one kind for every fd whose link is socket:[INO], which hands
// the fd to the dumper of its address family. Each family's file
// registers its dumper in socketFamilies and its entry type (UNIXSK,
// INETSK, NETLINKSK, PACKETSK) as a kind of its own with the open side.

// socketDumper dumps one socket; sk is a copy of it in stasis (Fd.Dup),
// closed by the caller.
type socketDumper func(t *files.Table, fd *files.Fd, sk int) (*fdinfo.FileEntry, error)

var socketFamilies = map[int]socketDumper{}

var familyNames = map[int]string{
	unix.AF_UNIX: "a unix socket", unix.AF_INET: "an IPv4 socket", unix.AF_INET6: "an IPv6 socket",
	unix.AF_NETLINK: "a netlink socket", unix.AF_PACKET: "a packet socket",
}

func init() {
	files.Register(&files.Kind{Name: "socket", Dump: dumpSocket})
}

func dumpSocket(t *files.Table, fd *files.Fd) (*fdinfo.FileEntry, error) {
	sk, err := fd.Dup()
	if err != nil {
		return nil, err
	}
	defer unix.Close(sk)
	family, err := unix.GetsockoptInt(sk, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return nil, fmt.Errorf("%s: getsockopt SO_DOMAIN: %w", fd, err)
	}
	dump := socketFamilies[family]
	if dump == nil {
		name := familyNames[family]
		if name == "" {
			name = fmt.Sprintf("a socket of family %d", family)
		}
		return nil, &files.UnsupportedError{Pid: fd.Pid, Fd: fd.Num, Kind: name, Target: fd.Target}
	}
	return dump(t, fd, sk)
}

// socket makes a socket of the restored tree: in its network namespace
// (a socket belongs to the namespace of the thread that made it; bind,
// connect and repair then act there from any thread).
func socket(r *files.Restorer, domain, typ, proto int) (fd int, err error) {
	err = r.InNetNS(func() error {
		fd, err = unix.Socket(domain, typ, proto)
		return err
	})
	return fd, err
}

// socketpair is socket for a connected pair.
func socketpair(r *files.Restorer, domain, typ, proto int) (sv [2]int, err error) {
	err = r.InNetNS(func() error {
		sv, err = unix.Socketpair(domain, typ, proto)
		return err
	})
	return sv, err
}
