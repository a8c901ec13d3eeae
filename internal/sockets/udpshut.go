package sockets

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	sk_opts "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-opts"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/images"
)

// The shutdown state of a datagram (UDP, UDP-Lite) socket: after
// shutdown(SHUT_WR) its sends fail with EPIPE, which nothing but
// inet_diag shows (INET_DIAG_SHUTDOWN). criu 4.2 keeps it in
// InetSkEntry.shutdown as it does for TCP.

const (
	inetDiagReqLen = 56 // struct inet_diag_req_v2
	inetDiagMsgLen = 72 // struct inet_diag_msg
	inetDiagShut   = 8  // INET_DIAG_SHUTDOWN, u8
)

// inetShutdown reads sk_shutdown (RCV_SHUTDOWN 1 | SEND_SHUTDOWN 2) of
// the socket of inode ino, sk (asked in its network namespace): 0 if
// inet_diag cannot tell (no udp_diag).
func inetShutdown(sk, family, protocol int, ino uint32) (uint8, error) {
	r := make([]byte, inetDiagReqLen)
	r[0], r[1] = byte(family), byte(protocol)
	binary.NativeEndian.PutUint32(r[4:], 0xffffffff)  // every state
	binary.NativeEndian.PutUint32(r[48:], 0xffffffff) // no cookie
	binary.NativeEndian.PutUint32(r[52:], 0xffffffff)
	var sh uint8
	found := errors.New("found")
	err := sockDiagDump("inet sockets", sk, r, func(b []byte) error {
		if len(b) < inetDiagMsgLen || binary.NativeEndian.Uint32(b[68:]) != ino {
			return nil
		}
		for a := b[inetDiagMsgLen:]; len(a) >= 4; {
			l, typ := int(binary.NativeEndian.Uint16(a)), binary.NativeEndian.Uint16(a[2:])&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER)
			if l < 4 || l > len(a) {
				return fmt.Errorf("sock_diag: socket:[%d]: attribute %d of length %d in %d bytes", ino, typ, l, len(a))
			}
			if typ == inetDiagShut && l >= 5 {
				sh = a[4]
			}
			a = a[min(len(a), (l+3)&^3):]
		}
		return found
	})
	switch {
	case errors.Is(err, found), err == nil:
		return sh, nil
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EINVAL):
		return 0, nil // no diag module for this protocol
	}
	return 0, fmt.Errorf("shutdown state of socket:[%d]: %w", ino, err)
}

// shutdownDgram shuts a restored datagram socket down as it was. An
// unconnected socket is shut down too, with ENOTCONN (inet_shutdown).
func shutdownDgram(fd int, sh sk_opts.SkShutdown) error {
	if sh == sk_opts.SkShutdown_NONE {
		return nil
	}
	if sh > sk_opts.SkShutdown_BOTH {
		return fmt.Errorf("shutdown state %d: %w", sh, images.ErrCorrupt)
	}
	// SHUT_RD, SHUT_WR, SHUT_RDWR are the SkShutdown values less one.
	if err := unix.Shutdown(fd, int(sh)-1); err != nil && err != unix.ENOTCONN {
		return fmt.Errorf("shutdown %v: %w", sh, os.NewSyscallError("shutdown", err))
	}
	return nil
}
