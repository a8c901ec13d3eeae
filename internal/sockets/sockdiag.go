package sockets

import (
	"encoding/binary"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
)

// The unix sockets of a network namespace as sock_diag reports them
// (NETLINK_SOCK_DIAG, include/uapi/linux/unix_diag.h): what no
// getsockopt tells, the inode of the peer and the connections waiting in
// a listener's backlog.

// include/uapi/linux/unix_diag.h
const (
	udiagShowName     = 0x01
	udiagShowVFS      = 0x02
	udiagShowPeer     = 0x04
	udiagShowIcons    = 0x08
	udiagShowRqlen    = 0x10
	unixDiagName      = 0
	unixDiagVFS       = 1
	unixDiagPeer      = 2
	unixDiagIcons     = 3
	unixDiagRqlen     = 4
	unixDiagShutdown  = 6
	unixDiagReqLen    = 24 // struct unix_diag_req
	unixDiagMsgLen    = 16 // struct unix_diag_msg
	unixDiagAllStates = 0xffffffff
)

// unixDiag is one unix socket.
type unixDiag struct {
	Ino         uint32
	Type, State uint8
	// Name is the address it is bound to, nil if unbound; an abstract
	// name starts with a NUL byte.
	Name []byte
	// VFSIno, VFSDev identify the socket file of a name in the
	// filesystem.
	VFSIno, VFSDev uint32
	Peer           uint32 // inode of the peer, 0 if none or gone
	// Icons are the inodes of the client sockets of the connections in
	// a listener's backlog, oldest first (0 for a client already closed).
	Icons []uint32
	// Rqueue and Wqueue: bytes queued to read and sent but not yet read
	// by the receiver; for a listener, pending connections and backlog.
	Rqueue, Wqueue uint32
	Shutdown       uint8 // RCV_SHUTDOWN 1 | SEND_SHUTDOWN 2
}

// readUnixDiag lists every unix socket of the network namespace of
// socket sk (stasis' own or the tree's).
func readUnixDiag(sk int) (map[uint32]*unixDiag, error) {
	r := make([]byte, unixDiagReqLen)
	ne := binary.NativeEndian
	r[0] = unix.AF_UNIX
	ne.PutUint32(r[4:], unixDiagAllStates)
	ne.PutUint32(r[12:], udiagShowName|udiagShowVFS|udiagShowPeer|udiagShowIcons|udiagShowRqlen)
	ne.PutUint32(r[16:], 0xffffffff) // no cookie
	ne.PutUint32(r[20:], 0xffffffff)
	out := map[uint32]*unixDiag{}
	err := sockDiagDump("unix sockets", sk, r, func(b []byte) error {
		d, err := parseUnixDiag(b)
		if err != nil {
			return err
		}
		out[d.Ino] = d
		return nil
	})
	return out, err
}

// sockDiagDump sends a sock_diag dump request of what (its family's
// request struct) in the network namespace of socket sk and calls fn
// with the payload of each answer.
func sockDiagDump(what string, sk int, req []byte, fn func([]byte) error) error {
	s, err := diagSocket(sk)
	if err != nil {
		return fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(s)
	msg := make([]byte, unix.NLMSG_HDRLEN+len(req))
	ne := binary.NativeEndian
	ne.PutUint32(msg[0:], uint32(len(msg)))
	ne.PutUint16(msg[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(msg[8:], 1) // seq
	copy(msg[unix.NLMSG_HDRLEN:], req)
	if err := unix.Sendto(s, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag: %w", os.NewSyscallError("sendto", err))
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := linux.Recvfrom(s, buf, 0)
		if err != nil {
			return fmt.Errorf("sock_diag: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("sock_diag: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := int32(ne.Uint32(m.Data)); e != 0 {
						return fmt.Errorf("sock_diag of %s: %w", what, unix.Errno(-e))
					}
				}
				return fmt.Errorf("sock_diag of %s: malformed error message", what)
			case unix.SOCK_DIAG_BY_FAMILY:
				if err := fn(m.Data); err != nil {
					return err
				}
			}
		}
	}
}

// parseUnixDiag decodes one unix_diag_msg and its attributes.
func parseUnixDiag(b []byte) (*unixDiag, error) {
	if len(b) < unixDiagMsgLen {
		return nil, fmt.Errorf("sock_diag: unix_diag_msg of %d bytes, want %d", len(b), unixDiagMsgLen)
	}
	ne := binary.NativeEndian
	d := &unixDiag{Type: b[1], State: b[2], Ino: ne.Uint32(b[4:])}
	for a := b[unixDiagMsgLen:]; len(a) >= 4; {
		l, typ := int(ne.Uint16(a)), ne.Uint16(a[2:])&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER)
		if l < 4 || l > len(a) {
			return nil, fmt.Errorf("sock_diag: socket:[%d]: attribute %d of length %d in %d bytes", d.Ino, typ, l, len(a))
		}
		v := a[4:l]
		short := func(n int) error {
			if len(v) < n {
				return fmt.Errorf("sock_diag: socket:[%d]: attribute %d of %d bytes, want %d", d.Ino, typ, len(v), n)
			}
			return nil
		}
		switch typ {
		case unixDiagName:
			d.Name = append([]byte{}, v...)
		case unixDiagVFS:
			if err := short(8); err != nil {
				return nil, err
			}
			d.VFSIno, d.VFSDev = ne.Uint32(v), ne.Uint32(v[4:])
		case unixDiagPeer:
			if err := short(4); err != nil {
				return nil, err
			}
			d.Peer = ne.Uint32(v)
		case unixDiagIcons:
			for i := 0; i+4 <= len(v); i += 4 {
				d.Icons = append(d.Icons, ne.Uint32(v[i:]))
			}
		case unixDiagRqlen:
			if err := short(8); err != nil {
				return nil, err
			}
			d.Rqueue, d.Wqueue = ne.Uint32(v), ne.Uint32(v[4:])
		case unixDiagShutdown:
			if err := short(1); err != nil {
				return nil, err
			}
			d.Shutdown = v[0]
		}
		a = a[min((l+3)&^3, len(a)):]
	}
	return d, nil
}
