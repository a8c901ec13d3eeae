package sockets

import (
	"errors"
	"fmt"
	"io"
	"os"

	sk_packet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-packet"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/images"
)

// The receive queues of unix sockets (criu's sk-queue.c): one
// SkPacketEntry per message in sk-queues.img, for the socket that will
// read it (id_for), followed by its bytes; the files a message carries
// (SCM_RIGHTS, see inflight.go) are file ids in its scm entry. The
// restore sends each message again, with its files, through the peer.
//
// A stream queue has no boundaries but one: a read stops after the bytes
// that came with files (unix_stream_read_generic), so a message carrying
// files is recorded alone, from its first byte, and sent alone again.

// scmRights is criu's SCM_RIGHTS scm entry type (SCM_RIGHTS itself).
const scmRights = unix.SCM_RIGHTS

// unixPacket is one message queued to a socket.
type unixPacket struct {
	idFor  uint32
	data   []byte
	rights []uint32 // the files it carries, by file id, in order
	addr   []byte   // a datagram's sender, as sock_diag names it; nil if unbound
}

// queued is one message peeked: its bytes and stasis' copies of the fds
// it carries.
type queued struct {
	data []byte
	fds  []int
	addr []byte
}

// dumpQueue records what is queued to be read on fd, whose copy in
// stasis is sk, and the files in flight with it.
func (st *unixDump) dumpQueue(t *files.Table, fd *files.Fd, sk, typ int) error {
	msgs, err := peekUnixQueue(sk, typ)
	if err != nil {
		return err
	}
	for i, m := range msgs {
		p := unixPacket{idFor: fd.ID, data: m.data}
		if typ == unix.SOCK_DGRAM {
			p.addr = m.addr
		}
		if len(m.fds) > 0 {
			if p.rights, err = dumpInflight(t, fd, i+1, m.fds); err != nil {
				for _, q := range msgs[i+1:] {
					closeAll(q.fds)
				}
				return err
			}
		}
		st.packets = append(st.packets, p)
	}
	return nil
}

func (st *unixDump) writeQueues(dir *images.Dir) error {
	if len(st.packets) == 0 {
		return nil // the restore takes a missing image as empty queues
	}
	w, err := dir.NewWriter("sk-queues.img")
	if err != nil {
		return err
	}
	for _, p := range st.packets {
		e := &sk_packet.SkPacketEntry{IdFor: proto.Uint32(p.idFor), Length: proto.Uint32(uint32(len(p.data)))}
		setPacketAddr(e, p.addr)
		if len(p.rights) > 0 {
			e.Scm = []*sk_packet.ScmEntry{{Type: proto.Uint32(scmRights), Rights: p.rights}}
		}
		w.Write(e)
		w.WriteExtra(p.data)
	}
	return w.Close()
}

// peekUnixQueue copies what is queued to be read on sk, one message per
// datagram or record, without consuming it: MSG_PEEK walks the queue as
// SO_PEEK_OFF moves on, and the task's own peek offset is put back. The
// fds the messages carry are installed in stasis; the caller owns them.
func peekUnixQueue(sk, typ int) ([]queued, error) {
	orig, err := unix.GetsockoptInt(sk, unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	if err != nil {
		return nil, os.NewSyscallError("getsockopt SO_PEEK_OFF", err)
	}
	if err := unix.SetsockoptInt(sk, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
		return nil, os.NewSyscallError("setsockopt SO_PEEK_OFF", err)
	}
	msgs, err := peekMessages(sk, typ)
	if e := unix.SetsockoptInt(sk, unix.SOL_SOCKET, unix.SO_PEEK_OFF, orig); e != nil && err == nil {
		err = fmt.Errorf("put back the peek offset %d: %w", orig, os.NewSyscallError("setsockopt SO_PEEK_OFF", e))
	}
	if err != nil {
		for _, m := range msgs {
			closeAll(m.fds)
		}
		return nil, err
	}
	return msgs, nil
}

// peekMessages peeks from offset 0 on. On error, the messages peeked so
// far come back with it, for their fds to be closed.
func peekMessages(sk, typ int) ([]queued, error) {
	var out []queued
	off := 0
	for {
		size := 0
		if typ == unix.SOCK_STREAM {
			// The whole queue at most, so that a read stops only where
			// the kernel ends it: after bytes that carry files.
			n, err := unix.IoctlGetInt(sk, unix.SIOCINQ)
			if err != nil {
				return out, os.NewSyscallError("ioctl SIOCINQ", err)
			}
			size = max(n-off, 1)
		} else {
			// The length of the next message, to read it whole. Without
			// room for control messages, its files are not installed.
			n, _, _, _, err := unix.Recvmsg(sk, nil, nil, unix.MSG_PEEK|unix.MSG_TRUNC|unix.MSG_DONTWAIT)
			if err == unix.EAGAIN || (err == nil && n == 0) {
				// A zero-length message cannot be told from the end
				// of a queue whose writer shut down; criu does the same.
				return out, nil
			}
			if err != nil {
				return out, os.NewSyscallError("recvmsg MSG_PEEK", err)
			}
			size = n
		}
		buf := make([]byte, size)
		n, fds, from, err := peekOne(sk, buf)
		if err == unix.EAGAIN || (err == nil && n == 0) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("message %d: %w", len(out)+1, err)
		}
		if typ == unix.SOCK_STREAM && len(fds) > 0 {
			// The bytes before those that came with the files are a
			// message of their own.
			at, err := fdsStart(sk, off, n)
			if err != nil {
				closeAll(fds)
				return out, fmt.Errorf("message %d: %w", len(out)+1, err)
			}
			if at > 0 {
				out = append(out, queued{data: buf[:at]})
			}
			out = append(out, queued{data: buf[at:n], fds: fds})
			off += n
			if err := unix.SetsockoptInt(sk, unix.SOL_SOCKET, unix.SO_PEEK_OFF, off); err != nil {
				return out, os.NewSyscallError("setsockopt SO_PEEK_OFF", err)
			}
			continue
		}
		out = append(out, queued{data: buf[:n], fds: fds, addr: rawUnixAddr(from)})
		off += n
	}
}

// peekOne peeks at the next message into buf: its length and the fds
// it carries, installed in stasis (close-on-exec).
func peekOne(sk int, buf []byte) (int, []int, unix.Sockaddr, error) {
	oob := make([]byte, unix.CmsgSpace(253*4)+unix.CmsgSpace(64)) // SCM_MAX_FD fds, credentials
	n, oobn, flags, from, err := unix.Recvmsg(sk, buf, oob, unix.MSG_PEEK|unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return 0, nil, nil, err
	}
	fds, err := parseCmsgs(oob[:oobn])
	if err == nil && flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		err = fmt.Errorf("truncated to %d bytes by the peek", n)
	}
	if err != nil {
		closeAll(fds)
		return 0, nil, nil, fmt.Errorf("%d bytes: %w", n, err)
	}
	return n, fds, from, nil
}

// fdsStart finds where, in the n bytes peeked at off of a stream queue,
// those that came with files begin. A peek cannot tell: it goes on over
// the next buffers when it has copied all it was asked for, up to one
// with files, whose files it installs. But it copies a buffer whole or
// not at all: into a buffer whose first n-1 bytes are writable and the
// rest is not, it copies the buffers before the one with files and
// stops at the fault, without its files.
func fdsStart(sk, off, n int) (int, error) {
	if n <= 1 {
		return 0, nil
	}
	page := os.Getpagesize()
	valid := n - 1
	mapped := (valid+page-1)/page*page + page
	mem, err := unix.Mmap(-1, 0, mapped, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0, os.NewSyscallError("mmap", err)
	}
	defer unix.Munmap(mem)
	guard := mapped - page
	if err := unix.Mprotect(mem[guard:], unix.PROT_NONE); err != nil {
		return 0, os.NewSyscallError("mprotect", err)
	}
	if err := unix.SetsockoptInt(sk, unix.SOL_SOCKET, unix.SO_PEEK_OFF, off); err != nil {
		return 0, os.NewSyscallError("setsockopt SO_PEEK_OFF", err)
	}
	got, fds, _, err := peekOne(sk, mem[guard-valid:])
	closeAll(fds) // none: the buffer with files is never copied whole
	switch {
	case errors.Is(err, unix.EFAULT):
		return 0, nil // the files came with the first byte
	case err != nil:
		return 0, err
	case len(fds) > 0 || got > valid:
		return 0, fmt.Errorf("peek of %d bytes at %d into %d writable ones got %d and %d files", n, off, valid, got, len(fds))
	}
	return got, nil
}

// parseCmsgs returns the fds of SCM_RIGHTS and refuses the control
// messages a restore could not send again.
func parseCmsgs(b []byte) ([]int, error) {
	if len(b) == 0 {
		return nil, nil
	}
	cms, err := unix.ParseSocketControlMessage(b)
	if err != nil {
		return nil, err
	}
	var fds []int
	var bad error
	for _, c := range cms {
		if c.Header.Level != unix.SOL_SOCKET {
			bad = fmt.Errorf("control message of level %d type %d: %w", c.Header.Level, c.Header.Type, files.ErrUnsupported)
			continue
		}
		switch c.Header.Type {
		case unix.SCM_RIGHTS:
			f, err := unix.ParseUnixRights(&c)
			if err != nil {
				bad = err
			}
			fds = append(fds, f...)
		case unix.SCM_CREDENTIALS:
			// The restore sends as stasis; the receiver sees stasis'
			// credentials, as criu 4 without ucred in its image.
		default:
			bad = fmt.Errorf("control message of type %d: %w", c.Header.Type, files.ErrUnsupported)
		}
	}
	return fds, bad
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// readUnixQueues reads sk-queues.img into the sockets that will read
// each message, and checks the files they carry are in files.img.
func readUnixQueues(dir *images.Dir, byID map[uint32]*usk, haveFile func(id uint32) bool) error {
	const name = "sk-queues.img"
	if !dir.Has(name) {
		return nil
	}
	rd, err := dir.NewReader(name)
	if err != nil {
		return err
	}
	defer rd.Close()
	for {
		off := rd.Offset()
		e := &sk_packet.SkPacketEntry{}
		if err := rd.Next(e); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		data, err := rd.ReadExtra()
		if err != nil {
			return err
		}
		bad := func(format string, args ...any) error {
			return &images.Error{File: name, Offset: off, Err: fmt.Errorf(format, args...)}
		}
		s := byID[e.GetIdFor()]
		switch {
		case s == nil || s.extern():
			return bad("message for file id %d, which is not a unix socket of the tree: %w", e.GetIdFor(), images.ErrCorrupt)
		case uint64(len(data)) != uint64(e.GetLength()):
			return bad("message of %d bytes has %d: %w", e.GetLength(), len(data), images.ErrCorrupt)
		}
		addr, err := packetAddr(e)
		if err != nil || len(addr) > len(unix.RawSockaddrUnix{}.Path) {
			return bad("message for %s: sender's address (field %d): %v: %w", s, fieldPacketAddr, err, images.ErrCorrupt)
		}
		p := unixPacket{idFor: e.GetIdFor(), data: data, addr: addr}
		for _, scm := range e.GetScm() {
			if scm.GetType() != scmRights {
				return bad("message for %s carries a control message of type %d: %w", s, scm.GetType(), files.ErrUnsupported)
			}
			for _, id := range scm.GetRights() {
				if !haveFile(id) {
					return bad("message for %s carries file id %d, which is not in files.img: %w", s, id, images.ErrCorrupt)
				}
			}
			p.rights = append(p.rights, scm.GetRights()...)
		}
		if len(p.rights) > 253 {
			return bad("message for %s carries %d files, more than one message can (253): %w", s, len(p.rights), images.ErrCorrupt)
		}
		if len(p.rights) > 0 && len(data) == 0 && s.ue.GetType() == unix.SOCK_STREAM {
			return bad("message for %s carries files and no byte, which a stream cannot: %w", s, images.ErrCorrupt)
		}
		s.packets = append(s.packets, p)
	}
}

// refill sends what was queued to s again, so that it lands in s's
// receive queue: through its peer, or for a named datagram socket from a
// socket of stasis (the senders' addresses are not in the image). The
// files a message carries go with it, each the one open file description
// of its id, shared with the tree's fds of that id.
func (b *unixBuild) refill(s *usk) error {
	if len(s.packets) == 0 {
		return nil
	}
	from, to := -1, unix.Sockaddr(nil)
	switch p := b.peer(s); {
	case s.other >= 0:
		from = s.other
	case s.paired:
		from = p.fd
	case s.ue.GetType() == unix.SOCK_DGRAM && len(s.ue.GetName()) > 0 && (p == nil || !p.extern()):
		for _, q := range b.all {
			if q.fd >= 0 && !q.extern() && q.ue.GetPeer() == s.ue.GetIno() && (p == nil || p == q) {
				from = q.fd // connected to s, which may accept only it
				break
			}
		}
		if from < 0 {
			tmp, err := socket(b.r, unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return os.NewSyscallError("socket", err)
			}
			defer unix.Close(tmp)
			from, to = tmp, s.addr()
		}
	default:
		return fmt.Errorf("%d queued messages: no socket of the dump can send them to it again", len(s.packets))
	}
	for i, m := range s.packets {
		from, to := from, to
		if len(m.addr) > 0 && s.ue.GetType() == unix.SOCK_DGRAM && !s.paired && s.other < 0 {
			fd, done, err := b.sender(m.addr)
			if err != nil {
				return fmt.Errorf("queued message %d of %d: %w", i+1, len(s.packets), err)
			}
			if fd >= 0 {
				defer done()
				from, to = fd, s.addr()
			}
		}
		var oob []byte
		if len(m.rights) > 0 {
			fds, err := b.rights(m.rights)
			if err != nil {
				return fmt.Errorf("queued message %d of %d: %w", i+1, len(s.packets), err)
			}
			oob = unix.UnixRights(fds...)
		}
		for sent := 0; ; {
			// The files go with the first bytes, as they came.
			n, err := unix.SendmsgN(from, m.data[sent:], oob, to, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
			if err != nil {
				return fmt.Errorf("refill queued message %d of %d (%d bytes, %d files): %w", i+1, len(s.packets), len(m.data), len(m.rights),
					os.NewSyscallError("sendmsg", err))
			}
			sent, oob = sent+n, nil
			if sent == len(m.data) {
				break
			}
			if s.ue.GetType() != unix.SOCK_STREAM {
				return fmt.Errorf("refill queued message %d: %d of %d bytes sent", i+1, sent, len(m.data))
			}
		}
	}
	return nil
}

// rights opens the files of ids, once per id: a unix socket is the one
// being built, any other file the Restorer's.
func (b *unixBuild) rights(ids []uint32) ([]int, error) {
	fds := make([]int, len(ids))
	for i, id := range ids {
		if s := b.byID[id]; s != nil {
			if s.fd < 0 || s.extern() {
				return nil, fmt.Errorf("it carries %s, which is not made here (outside the tree or inherited)", s)
			}
			// Its flags as a task will have them: the description goes
			// in flight as it is now.
			if err := files.AnonSetfl(s.fd, s.ue.GetFlags()); err != nil {
				return nil, fmt.Errorf("it carries %s: %w", s, err)
			}
			fds[i] = s.fd
			continue
		}
		f, err := b.r.Open(id)
		if err != nil {
			return nil, fmt.Errorf("it carries file id %d: %w", id, err)
		}
		fds[i] = int(f.Fd())
	}
	return fds, nil
}

// sender is a socket bound to addr, the name of the socket that sent a
// queued datagram, to send it again from: the dump's own socket of that
// name, or a temporary one bound to it (the sender has closed since, as
// criu's restore does for its queues). -1 when no socket can take the
// name (a relative path whose directory is unknown, an abstract name
// taken outside the tree): the message then comes from an unbound
// socket, as before the dump's address was recorded.
func (b *unixBuild) sender(addr []byte) (int, func(), error) {
	for _, q := range b.all {
		if q.fd >= 0 && !q.extern() && q.ue.GetType() == unix.SOCK_DGRAM && sameUnixName(q.ue.GetName(), addr) {
			return q.fd, func() {}, nil
		}
	}
	if addr[0] != 0 && addr[0] != '/' {
		return -1, nil, nil
	}
	tmp, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, os.NewSyscallError("socket", err)
	}
	closeTmp := func() { unix.Close(tmp) }
	if addr[0] == 0 {
		if err := unix.Bind(tmp, &unix.SockaddrUnix{Name: string(addr)}); err != nil {
			closeTmp()
			return -1, nil, nil
		}
		return tmp, closeTmp, nil
	}
	// The sender's file is not needed once bound: the address is the
	// socket's own.
	a := &aside{name: unixPath(addr)}
	err = a.prepare()
	if err == nil {
		if err = unix.Bind(tmp, &unix.SockaddrUnix{Name: a.name}); err != nil {
			err = fmt.Errorf("bind a socket to %s, its sender's name: %w", a.name, os.NewSyscallError("bind", err))
		} else if err = unix.Unlink(a.name); err != nil {
			err = fmt.Errorf("unlink %s after the bind: %w", a.name, os.NewSyscallError("unlink", err))
		}
	}
	if derr := a.done(); err == nil {
		err = derr
	}
	if err != nil {
		closeTmp()
		return -1, nil, err
	}
	return tmp, closeTmp, nil
}
