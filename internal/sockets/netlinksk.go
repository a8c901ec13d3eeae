package sockets

import (
	"encoding/binary"
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	sk_netlink "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-netlink"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/images"
)

// Netlink sockets (criu's sk-netlink.c): protocol, port id, multicast
// groups, connected peer, socket options. Messages queued on the socket
// are not kept (criu does not either): a netlink reply or notification
// that had arrived and was not read yet is lost, as under memory
// pressure; programs re-request or resync on ENOBUFS.

func init() {
	socketFamilies[unix.AF_NETLINK] = dumpNetlink
	files.Register(&files.Kind{Type: fdinfo.FdTypes_NETLINKSK, Open: openNetlink})
}

// netlink_sk_entry.state: NETLINK_UNCONNECTED, NETLINK_CONNECTED
// (net/netlink/af_netlink.h).
const (
	netlinkUnconnected = 0
	netlinkConnected   = 1
)

func dumpNetlink(_ *files.Table, fd *files.Fd, sk int) (*fdinfo.FileEntry, error) {
	proto_, err := unix.GetsockoptInt(sk, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if err != nil {
		return nil, fmt.Errorf("getsockopt SO_PROTOCOL: %w", err)
	}
	sa, err := unix.Getsockname(sk)
	if err != nil {
		return nil, fmt.Errorf("getsockname: %w", err)
	}
	local, ok := sa.(*unix.SockaddrNetlink)
	if !ok {
		return nil, fmt.Errorf("getsockname: %T, not a netlink address", sa)
	}
	groups, err := netlinkGroups(sk)
	if err != nil {
		return nil, err
	}
	ne := &sk_netlink.NetlinkSkEntry{
		Id: proto.Uint32(fd.ID), Ino: proto.Uint32(uint32(fd.Stat.Ino)), Protocol: proto.Uint32(uint32(proto_)),
		State: proto.Uint32(netlinkUnconnected), Flags: proto.Uint32(fd.Flags()), Portid: proto.Uint32(local.Pid),
		Groups: groups, DstPortid: proto.Uint32(0), DstGroup: proto.Uint32(0), Fown: files.AnonFown(),
	}
	if sa, err := unix.Getpeername(sk); err == nil {
		if peer, ok := sa.(*unix.SockaddrNetlink); ok && (peer.Pid != 0 || peer.Groups != 0) {
			ne.DstPortid, ne.DstGroup = proto.Uint32(peer.Pid), proto.Uint32(peer.Groups)
			ne.State = proto.Uint32(netlinkConnected)
		}
	}
	if ne.Opts, err = dumpSockOpts(sk); err != nil {
		return nil, err
	}
	return &fdinfo.FileEntry{Type: fdinfo.FdTypes_NETLINKSK.Enum(), Id: proto.Uint32(fd.ID), Nlsk: ne}, nil
}

// netlinkGroups is the bitmap of the groups a socket is a member of, in
// u32 words (NETLINK_LIST_MEMBERSHIPS), without trailing zero words.
func netlinkGroups(sk int) ([]uint32, error) {
	buf := make([]byte, 128)
	for {
		n, err := getsockoptBytes(sk, unix.SOL_NETLINK, unix.NETLINK_LIST_MEMBERSHIPS, buf)
		if err != nil {
			return nil, os.NewSyscallError("getsockopt NETLINK_LIST_MEMBERSHIPS", err)
		}
		if n > len(buf) { // the length it needs
			buf = make([]byte, n)
			continue
		}
		var w []uint32
		for i := 0; i+4 <= n; i += 4 {
			w = append(w, binary.NativeEndian.Uint32(buf[i:]))
		}
		for len(w) > 0 && w[len(w)-1] == 0 {
			w = w[:len(w)-1]
		}
		return w, nil
	}
}

// openNetlink creates a netlink socket with the port id, groups and peer
// of an entry. The port id is taken explicitly: the one the kernel gave
// the dumped socket (often the pid, which the task has again).
func openNetlink(r *files.Restorer, fe *fdinfo.FileEntry) (*os.File, error) {
	ne := fe.GetNlsk()
	if ne == nil || fe.GetType() != fdinfo.FdTypes_NETLINKSK {
		return nil, files.NotKind(fe, "a netlink socket")
	}
	what := fmt.Sprintf("netlink socket of protocol %d, port id %d (file id %d)", ne.GetProtocol(), ne.GetPortid(), fe.GetId())
	if len(ne.GetGroups()) > 1024 {
		return nil, fmt.Errorf("restore %s: %d group words: %w", what, len(ne.GetGroups()), images.ErrCorrupt)
	}
	// criu does not keep the type: SOCK_RAW and SOCK_DGRAM are the same
	// to netlink.
	fd, err := socket(r, unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(ne.GetProtocol()))
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", what, os.NewSyscallError("socket", err))
	}
	f := files.NewAnonFile(fd, "socket")
	if err := restoreNetlink(fd, ne); err != nil {
		f.Close()
		return nil, fmt.Errorf("restore %s: %w", what, err)
	}
	return f, nil
}

func restoreNetlink(fd int, ne *sk_netlink.NetlinkSkEntry) error {
	if err := restoreSockOpts(fd, ne.GetOpts()); err != nil {
		return err
	}
	if ne.GetPortid() != 0 {
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: ne.GetPortid()}); err != nil {
			if err == unix.EADDRINUSE {
				return fmt.Errorf("bind to port id %d: %w: another netlink socket has it now", ne.GetPortid(), err)
			}
			return os.NewSyscallError("bind", err)
		}
	}
	for i, w := range ne.GetGroups() {
		for b := 0; b < 32; b++ {
			if w&(1<<b) == 0 {
				continue
			}
			group := i*32 + b + 1
			if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, group); err != nil {
				return fmt.Errorf("join group %d: %w", group, os.NewSyscallError("setsockopt NETLINK_ADD_MEMBERSHIP", err))
			}
		}
	}
	if ne.GetState() == netlinkConnected {
		if err := unix.Connect(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: ne.GetDstPortid(), Groups: ne.GetDstGroup()}); err != nil {
			return fmt.Errorf("connect to port id %d group %d: %w", ne.GetDstPortid(), ne.GetDstGroup(), os.NewSyscallError("connect", err))
		}
	}
	return files.AnonSetfl(fd, ne.GetFlags())
}
