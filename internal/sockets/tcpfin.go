package sockets

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/netlock"
)

// The peer's FIN of a half-closed connection (CLOSE_WAIT, LAST_ACK,
// CLOSING) cannot be put back into a receive queue with TCP_REPAIR: it
// is not data. As criu (soccr's send_fin), stasis sends the new socket a
// FIN from its peer's address with a raw socket, while it is in repair
// mode: the socket takes it as the peer's, and only the local stack sees
// it (the destination is a local address).

// sendPeerFin sends to local, from remote, a segment with flags (FIN|ACK)
// at sequence seq acknowledging ack, advertising window win.
func sendPeerFin(local, remote netip.AddrPort, seq, ack uint32, win uint16) error {
	src, dst := remote.Addr().Unmap(), local.Addr().Unmap()
	if src.Is4() != dst.Is4() {
		return fmt.Errorf("peer %s and local %s of different families", remote, local)
	}
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], remote.Port())
	binary.BigEndian.PutUint16(tcp[2:], local.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = 5 << 4
	tcp[13] = 0x11 // FIN|ACK
	binary.BigEndian.PutUint16(tcp[14:], win)
	binary.BigEndian.PutUint16(tcp[16:], tcpChecksum(src, dst, tcp))
	var pkt []byte
	var fd int
	var err error
	var sa unix.Sockaddr
	if src.Is4() {
		ip := make([]byte, 20, 40)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], 40)
		ip[8] = 64
		ip[9] = unix.IPPROTO_TCP
		s4, d4 := src.As4(), dst.As4()
		copy(ip[12:], s4[:])
		copy(ip[16:], d4[:])
		pkt = append(ip, tcp...) // the kernel fills in the IP checksum and id
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		sa = &unix.SockaddrInet4{Addr: d4}
	} else {
		ip := make([]byte, 40, 60)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], 20)
		ip[6] = unix.IPPROTO_TCP
		ip[7] = 64
		s16, d16 := src.As16(), dst.As16()
		copy(ip[8:], s16[:])
		copy(ip[24:], d16[:])
		pkt = append(ip, tcp...)
		// IPPROTO_RAW implies IPV6_HDRINCL.
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		sa = &unix.SockaddrInet6{Addr: d16}
	}
	if err != nil {
		return fmt.Errorf("send the peer's FIN: %w", os.NewSyscallError("socket SOCK_RAW", err))
	}
	defer unix.Close(fd)
	// The network lock drops the peer's packets, but not this one.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, netlock.SoccrMark); err != nil {
		return fmt.Errorf("send the peer's FIN: %w", os.NewSyscallError("setsockopt SO_MARK", err))
	}
	if err := unix.Sendto(fd, pkt, 0, sa); err != nil {
		return fmt.Errorf("send the peer's FIN: %w", os.NewSyscallError("sendto", err))
	}
	return nil
}

// tcpChecksum is the checksum of a TCP segment with its pseudo-header
// (RFC 793, RFC 8200 8.1).
func tcpChecksum(src, dst netip.Addr, seg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src.AsSlice())
	add(dst.AsSlice())
	sum += unix.IPPROTO_TCP + uint32(len(seg))
	add(seg)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
