package rpc

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
)

// maxMessage bounds one request. criu sizes its buffer from a peek with
// no limit; a criu_req with every list runc fills is a few KiB.
const maxMessage = 4 << 20

// conn is one SOCK_SEQPACKET connection: a packet is a message.
type conn struct {
	f    *os.File
	fd   int
	peer int // the client: SO_PEERCRED (for a socketpair, its creator)
	uid  int // the client's uid
}

func newConn(f *os.File) (*conn, error) {
	fd := int(f.Fd())
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("rpc socket fd %d: %w", fd, err)
	}
	if typ != unix.SOCK_SEQPACKET {
		return nil, fmt.Errorf("rpc socket fd %d: type %d, want SOCK_SEQPACKET: %w", fd, typ, ErrBadRequest)
	}
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return nil, fmt.Errorf("rpc socket fd %d: peer: %w", fd, err)
	}
	return &conn{f: f, fd: fd, peer: int(cred.Pid), uid: int(cred.Uid)}, nil
}

// recv reads one request; io.EOF when the client has closed.
func (c *conn) recv() (*rpc.CriuReq, error) {
	// MSG_TRUNC with a peek gives the packet's real size.
	n, _, err := linux.Recvfrom(c.fd, nil, unix.MSG_PEEK|unix.MSG_TRUNC)
	if err != nil {
		return nil, fmt.Errorf("rpc: read request: %w", err)
	}
	if n > maxMessage {
		// Take it off the socket, so that the reply is not read back.
		_, _, _ = unix.Recvfrom(c.fd, make([]byte, 1), 0)
		return nil, fmt.Errorf("rpc: request of %d bytes, more than %d: %w", n, maxMessage, ErrBadRequest)
	}
	buf := make([]byte, max(n, 1))
	n, _, err = linux.Recvfrom(c.fd, buf, 0)
	if err != nil {
		return nil, fmt.Errorf("rpc: read request: %w", err)
	}
	if n == 0 {
		return nil, io.EOF
	}
	req := &rpc.CriuReq{}
	if err := req.UnmarshalVT(buf[:n]); err != nil {
		return nil, fmt.Errorf("rpc: malformed request (%d bytes): %v: %w", n, err, ErrBadRequest)
	}
	return req, nil
}

// send writes one reply in one packet, as criu does.
func (c *conn) send(resp *rpc.CriuResp) error {
	b, err := resp.MarshalVT()
	if err != nil {
		return fmt.Errorf("rpc: encode %v reply: %w", resp.GetType(), err)
	}
	// MSG_NOSIGNAL: a client gone is an error here, not a SIGPIPE
	// (which `stasis swrk` takes as an interruption).
	if err := linux.Sendto(c.fd, b, unix.MSG_NOSIGNAL, nil); err != nil {
		if errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET) {
			return fmt.Errorf("rpc: send %v reply: client gone: %w", resp.GetType(), err)
		}
		return fmt.Errorf("rpc: send %v reply: %w", resp.GetType(), err)
	}
	return nil
}
