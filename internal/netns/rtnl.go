package netns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
)

// Addresses, routes and rules are kept as criu keeps them: the images
// ifaddr-ID.img, route-ID.img, route6-ID.img and rule-ID.img are what
// iproute2's `ip addr save`, `ip -4/-6 route save` and `ip rule save`
// write (criu runs those tools): a 32-bit magic, then the kernel's own
// RTM_NEW* messages as its dumps answer them. stasis makes the same
// dumps and replays the messages as `ip ... restore` does, with its own
// netlink socket instead of the tool. A message that exists already (a
// route the kernel added with an address, a default rule) is skipped.

// The magics of iproute2's save files (ip/ipaddress.c, iproute.c,
// iprule.c).
const (
	ifaddrMagic = 0x47361222
	routeMagic  = 0x45311224
	ruleMagic   = 0x71706986
)

// maxMsg bounds one saved message: rtnetlink messages are far smaller.
const maxMsg = 1 << 16

// rtnl is a NETLINK_ROUTE socket of the calling thread's network
// namespace.
type rtnl struct {
	fd  int
	seq uint32
	buf []byte
}

func openRtnl() (*rtnl, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("rtnetlink: %w", os.NewSyscallError("socket", err))
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("rtnetlink: %w", os.NewSyscallError("bind", err))
	}
	return &rtnl{fd: fd, buf: make([]byte, 1<<16)}, nil
}

func (r *rtnl) close() { unix.Close(r.fd) }

// send sends one message (header included, its length set here).
func (r *rtnl) send(msg []byte, typ, flags uint16) error {
	r.seq++
	ne := binary.NativeEndian
	ne.PutUint32(msg[0:], uint32(len(msg)))
	ne.PutUint16(msg[4:], typ)
	ne.PutUint16(msg[6:], flags)
	ne.PutUint32(msg[8:], r.seq)
	ne.PutUint32(msg[12:], 0)
	return os.NewSyscallError("sendto", unix.Sendto(r.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}))
}

// dump asks for every object of type typ (RTM_GETADDR, ...) with the
// family header hdr and calls fn with each answer, header included.
func (r *rtnl) dump(what string, typ uint16, hdr []byte, fn func(msg []byte) error) error {
	msg := make([]byte, unix.NLMSG_HDRLEN+len(hdr))
	copy(msg[unix.NLMSG_HDRLEN:], hdr)
	if err := r.send(msg, typ, unix.NLM_F_REQUEST|unix.NLM_F_DUMP); err != nil {
		return fmt.Errorf("dump %s: %w", what, err)
	}
	for {
		n, _, err := linux.Recvfrom(r.fd, r.buf, 0)
		if err != nil {
			return fmt.Errorf("dump %s: %w", what, err)
		}
		b := r.buf[:n]
		for len(b) >= unix.NLMSG_HDRLEN {
			l := int(binary.NativeEndian.Uint32(b))
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				return fmt.Errorf("dump %s: malformed answer", what)
			}
			m := b[:l]
			switch binary.NativeEndian.Uint16(m[4:]) {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if err := nlErr(m); err != nil {
					return fmt.Errorf("dump %s: %w", what, err)
				}
			default:
				if err := fn(m); err != nil {
					return err
				}
			}
			b = b[min(nlAlign(l), len(b)):]
		}
	}
}

// nlErr is the error of an NLMSG_ERROR message, nil for an ack.
func nlErr(m []byte) error {
	if len(m) < unix.NLMSG_HDRLEN+4 {
		return errors.New("malformed netlink error")
	}
	if e := int32(binary.NativeEndian.Uint32(m[unix.NLMSG_HDRLEN:])); e != 0 {
		return syscall.Errno(-e)
	}
	return nil
}

func nlAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// request sends msg with an ack requested and returns the kernel's
// answer to it.
func (r *rtnl) request(msg []byte, typ, flags uint16) error {
	if err := r.send(msg, typ, flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK); err != nil {
		return err
	}
	for {
		n, _, err := linux.Recvfrom(r.fd, r.buf, 0)
		if err != nil {
			return err
		}
		b := r.buf[:n]
		for len(b) >= unix.NLMSG_HDRLEN {
			l := int(binary.NativeEndian.Uint32(b))
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				return errors.New("malformed netlink answer")
			}
			if binary.NativeEndian.Uint16(b[4:]) == unix.NLMSG_ERROR && binary.NativeEndian.Uint32(b[8:]) == r.seq {
				return nlErr(b[:l])
			}
			b = b[min(nlAlign(l), len(b)):]
		}
	}
}

// saveFile is one iproute2 save file: its magic and messages.
type saveFile struct {
	magic uint32
	msgs  [][]byte
}

func (s *saveFile) write(w io.Writer) error {
	var m [4]byte
	binary.NativeEndian.PutUint32(m[:], s.magic)
	if _, err := w.Write(m[:]); err != nil {
		return err
	}
	for _, msg := range s.msgs {
		if _, err := w.Write(msg); err != nil {
			return err
		}
	}
	return nil
}

// readSaveFile reads a save file of the given magic, checking every
// length: a message must hold its header and fit in the file.
func readSaveFile(b []byte, magic uint32, name string) (*saveFile, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("image %s: %d bytes, no magic: %w", name, len(b), ErrBadImage)
	}
	if m := binary.NativeEndian.Uint32(b); m != magic {
		return nil, fmt.Errorf("image %s: magic %#x, want %#x: %w", name, m, magic, ErrBadImage)
	}
	s := &saveFile{magic: magic}
	off := 4
	for off < len(b) {
		if len(b)-off < unix.NLMSG_HDRLEN {
			return nil, fmt.Errorf("image %s: offset %d: truncated message header: %w", name, off, ErrBadImage)
		}
		l := int(binary.NativeEndian.Uint32(b[off:]))
		if l < unix.NLMSG_HDRLEN || l > maxMsg || l > len(b)-off {
			return nil, fmt.Errorf("image %s: offset %d: message of %d bytes in %d: %w", name, off, l, len(b)-off, ErrBadImage)
		}
		s.msgs = append(s.msgs, b[off:off+l])
		off += l
	}
	return s, nil
}

// rtattrs walks the attributes after a family header of hlen bytes.
func rtattrs(msg []byte, hlen int, fn func(typ uint16, val []byte)) {
	b := msg[min(len(msg), unix.NLMSG_HDRLEN+hlen):]
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b))
		if l < 4 || l > len(b) {
			return
		}
		fn(binary.NativeEndian.Uint16(b[2:])&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER), b[4:l])
		b = b[min(len(b), (l+3)&^3):]
	}
}
