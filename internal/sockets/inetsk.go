package sockets

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	sk_inet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-inet"
	sk_opts "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-opts"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/linux"
)

// IPv4 and IPv6 sockets (criu's sk-inet.c): TCP and UDP, unbound, bound,
// listening or connected. A TCP connection's stream (sequence numbers,
// queues, window) is in tcp.go. The state kept in the entry is the
// kernel's TCP state; a UDP socket is TCP_ESTABLISHED when connected and
// TCP_CLOSE otherwise, as criu writes it.

func init() {
	socketFamilies[unix.AF_INET] = dumpInet
	socketFamilies[unix.AF_INET6] = dumpInet
	files.Register(&files.Kind{Type: fdinfo.FdTypes_INETSK, Open: openInet})
}

var tcpStateNames = map[uint32]string{
	linux.TCPEstablished: "ESTABLISHED", linux.TCPSynSent: "SYN_SENT", linux.TCPSynRecv: "SYN_RECV",
	linux.TCPFinWait1: "FIN_WAIT1", linux.TCPFinWait2: "FIN_WAIT2", linux.TCPTimeWait: "TIME_WAIT",
	linux.TCPClose: "CLOSE", linux.TCPCloseWait: "CLOSE_WAIT", linux.TCPLastAck: "LAST_ACK",
	linux.TCPListen: "LISTEN", linux.TCPClosing: "CLOSING",
}

func tcpStateName(s uint32) string {
	if n, ok := tcpStateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("state %d", s)
}

func dumpInet(t *files.Table, fd *files.Fd, sk int) (*fdinfo.FileEntry, error) {
	family, err := unix.GetsockoptInt(sk, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return nil, fmt.Errorf("getsockopt SO_DOMAIN: %w", err)
	}
	typ, err := unix.GetsockoptInt(sk, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("getsockopt SO_TYPE: %w", err)
	}
	proto_, err := unix.GetsockoptInt(sk, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if err != nil {
		return nil, fmt.Errorf("getsockopt SO_PROTOCOL: %w", err)
	}
	ver := "IPv4"
	if family == unix.AF_INET6 {
		ver = "IPv6"
	}
	switch {
	case typ == unix.SOCK_STREAM && (proto_ == unix.IPPROTO_TCP || proto_ == unix.IPPROTO_MPTCP): // mptcp.go
	case typ == unix.SOCK_DGRAM && (proto_ == unix.IPPROTO_UDP || proto_ == unix.IPPROTO_UDPLITE):
	// ICMP datagram ("ping") sockets: their port is the echo identifier,
	// bound and connected as UDP's; replies queued are dropped as UDP's.
	case typ == unix.SOCK_DGRAM && (proto_ == unix.IPPROTO_ICMP || proto_ == unix.IPPROTO_ICMPV6):
	case typ == unix.SOCK_RAW: // rawsk.go
	default:
		return nil, &files.UnsupportedError{Pid: fd.Pid, Fd: fd.Num, Target: fd.Target,
			Kind: fmt.Sprintf("an %s socket of type %s, protocol %s", ver, sockTypeName(typ), ipProtoName(proto_))}
	}
	local, err := unix.Getsockname(sk)
	if err != nil {
		return nil, fmt.Errorf("getsockname: %w", err)
	}
	src, sport := inetAddr(family, local)
	ie := &sk_inet.InetSkEntry{
		Id: proto.Uint32(fd.ID), Ino: proto.Uint32(uint32(fd.Stat.Ino)),
		Family: proto.Uint32(uint32(family)), Type: proto.Uint32(uint32(typ)), Proto: proto.Uint32(uint32(proto_)),
		SrcPort: proto.Uint32(uint32(sport)), DstPort: proto.Uint32(0),
		Flags: proto.Uint32(fd.Flags()), Backlog: proto.Uint32(0),
		SrcAddr: addrWords(src), DstAddr: addrWords(zeroAddr(family)),
		Fown: files.AnonFown(),
	}
	if peer, err := unix.Getpeername(sk); err == nil {
		dst, dport := inetAddr(family, peer)
		ie.DstAddr, ie.DstPort = addrWords(dst), proto.Uint32(uint32(dport))
	} else if err != unix.ENOTCONN {
		return nil, fmt.Errorf("getpeername: %w", err)
	}
	if ie.Opts, err = dumpSockOpts(sk); err != nil {
		return nil, err
	}
	if ie.IpOpts, err = dumpIPOpts(sk, family); err != nil {
		return nil, err
	}
	if family == unix.AF_INET6 {
		v6only, err := unix.GetsockoptInt(sk, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		if err != nil {
			return nil, fmt.Errorf("getsockopt IPV6_V6ONLY: %w", err)
		}
		ie.V6Only = proto.Bool(v6only != 0)
		if sa, ok := local.(*unix.SockaddrInet6); ok && sa.ZoneId != 0 {
			if ifc, err := net.InterfaceByIndex(int(sa.ZoneId)); err == nil {
				ie.Ifname = proto.String(ifc.Name)
			}
		}
	}
	if typ == unix.SOCK_STREAM {
		if err := dumpTCP(t, fd, sk, ie); err != nil {
			return nil, err
		}
	} else if typ == unix.SOCK_RAW {
		if err := dumpRaw(fd, sk, ie); err != nil {
			return nil, err
		}
	} else {
		// criu does not dump the datagrams queued on a UDP socket
		// either: they are dropped, as a network may drop them.
		state := uint32(linux.TCPClose)
		if ie.GetDstPort() != 0 {
			state = linux.TCPEstablished
		}
		ie.State = proto.Uint32(state)
		if proto_ == unix.IPPROTO_UDP || proto_ == unix.IPPROTO_UDPLITE {
			sh, err := inetShutdown(sk, family, proto_, uint32(fd.Stat.Ino))
			if err != nil {
				return nil, err
			}
			if sh != 0 {
				ie.Shutdown = sk_opts.SkShutdown(sh & 3).Enum()
			}
		}
	}
	return &fdinfo.FileEntry{Type: fdinfo.FdTypes_INETSK.Enum(), Id: proto.Uint32(fd.ID), Isk: ie}, nil
}

// inetAddr returns the address and port of a socket address of family.
func inetAddr(family int, sa unix.Sockaddr) (netip.Addr, int) {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrFrom4(a.Addr), a.Port
	case *unix.SockaddrInet6:
		return netip.AddrFrom16(a.Addr), a.Port
	}
	return zeroAddr(family), 0
}

func zeroAddr(family int) netip.Addr {
	if family == unix.AF_INET6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

// addrWords is an address as criu keeps it: the bytes of in_addr or
// in6_addr read as native (little-endian) u32 words.
func addrWords(a netip.Addr) []uint32 {
	b := a.AsSlice()
	w := make([]uint32, len(b)/4)
	for i := range w {
		w[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return w
}

// wordsAddr is the address of criu's words for family.
func wordsAddr(family uint32, w []uint32) (netip.Addr, error) {
	var b [16]byte
	n := 4
	if family == unix.AF_INET6 {
		n = 16
	}
	if len(w) != n/4 {
		return netip.Addr{}, fmt.Errorf("%d address words for family %d: %w", len(w), family, images.ErrCorrupt)
	}
	for i, v := range w {
		binary.LittleEndian.PutUint32(b[4*i:], v)
	}
	if n == 4 {
		return netip.AddrFrom4([4]byte(b[:4])), nil
	}
	return netip.AddrFrom16(b), nil
}

// inetSockaddr is the socket address of an address and port.
func inetSockaddr(family uint32, a netip.Addr, port uint32, ifname string) (unix.Sockaddr, error) {
	if port > 0xffff {
		return nil, fmt.Errorf("port %d: %w", port, images.ErrCorrupt)
	}
	if family == unix.AF_INET6 {
		sa := &unix.SockaddrInet6{Addr: a.As16(), Port: int(port)}
		if ifname != "" {
			ifc, err := net.InterfaceByName(ifname)
			if err != nil {
				return nil, fmt.Errorf("interface %s of %s: %w", ifname, a, err)
			}
			sa.ZoneId = uint32(ifc.Index)
		}
		return sa, nil
	}
	return &unix.SockaddrInet4{Addr: a.As4(), Port: int(port)}, nil
}

// inetEnds are the two ends of an inet entry.
type inetEnds struct {
	local, remote     netip.AddrPort
	localSa, remoteSa unix.Sockaddr
	bound, connected  bool
}

func endsOf(ie *sk_inet.InetSkEntry) (*inetEnds, error) {
	src, err := wordsAddr(ie.GetFamily(), ie.GetSrcAddr())
	if err != nil {
		return nil, err
	}
	dst, err := wordsAddr(ie.GetFamily(), ie.GetDstAddr())
	if err != nil {
		return nil, err
	}
	e := &inetEnds{local: netip.AddrPortFrom(src, uint16(ie.GetSrcPort())), remote: netip.AddrPortFrom(dst, uint16(ie.GetDstPort()))}
	if e.localSa, err = inetSockaddr(ie.GetFamily(), src, ie.GetSrcPort(), ie.GetIfname()); err != nil {
		return nil, err
	}
	if e.remoteSa, err = inetSockaddr(ie.GetFamily(), dst, ie.GetDstPort(), ""); err != nil {
		return nil, err
	}
	e.bound = ie.GetSrcPort() != 0 || !src.IsUnspecified()
	e.connected = ie.GetDstPort() != 0
	return e, nil
}

// openInet creates the socket of an entry again: options, binding,
// listening or connection (tcp.go), then the file flags.
func openInet(r *files.Restorer, fe *fdinfo.FileEntry) (*os.File, error) {
	ie := fe.GetIsk()
	if ie == nil || fe.GetType() != fdinfo.FdTypes_INETSK {
		return nil, files.NotKind(fe, "an inet socket")
	}
	family, typ, proto_ := ie.GetFamily(), ie.GetType(), ie.GetProto()
	if family != unix.AF_INET && family != unix.AF_INET6 {
		return nil, fmt.Errorf("reopen inet socket file id %d: family %d: %w", fe.GetId(), family, images.ErrCorrupt)
	}
	ends, err := endsOf(ie)
	if err != nil {
		return nil, fmt.Errorf("reopen inet socket file id %d: %w", fe.GetId(), err)
	}
	what := fmt.Sprintf("%s socket %s (file id %d)", inetName(ie), ends.local, fe.GetId())
	if typ == unix.SOCK_STREAM && isTCPConn(ie.GetState()) {
		what = fmt.Sprintf("TCP connection %s -> %s (file id %d, %s)", ends.local, ends.remote, fe.GetId(), tcpStateName(ie.GetState()))
	}
	if isMPTCP(ie) && ie.GetState() != linux.TCPListen && ie.GetState() != linux.TCPClose {
		return nil, fmt.Errorf("restore %s: an MPTCP socket in state %s (the kernel has no repair mode for MPTCP): %w", what, tcpStateName(ie.GetState()), images.ErrCorrupt)
	}
	fd, err := socket(r, int(family), int(typ)|unix.SOCK_CLOEXEC, int(proto_))
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", what, os.NewSyscallError("socket", err))
	}
	f := files.NewAnonFile(fd, "socket")
	if err := restoreInet(r, fd, fe.GetId(), ie, ends); err != nil {
		f.Close()
		return nil, fmt.Errorf("restore %s: %w", what, err)
	}
	return f, nil
}

func inetName(ie *sk_inet.InetSkEntry) string {
	ver := "IPv4"
	if ie.GetFamily() == unix.AF_INET6 {
		ver = "IPv6"
	}
	if isMPTCP(ie) {
		return ver + " MPTCP"
	}
	if ie.GetType() == unix.SOCK_STREAM {
		return ver + " TCP"
	}
	if ie.GetType() == unix.SOCK_RAW {
		return fmt.Sprintf("%s raw (protocol %d)", ver, ie.GetProto())
	}
	if p := ie.GetProto(); p == unix.IPPROTO_ICMP || p == unix.IPPROTO_ICMPV6 {
		return ver + " ICMP datagram"
	}
	return ver + " UDP"
}

func restoreInet(r *files.Restorer, fd int, id uint32, ie *sk_inet.InetSkEntry, ends *inetEnds) error {
	// A raw socket is bound to its protocol from the start, and the
	// kernel takes IPV6_V6ONLY only from unbound sockets.
	if ie.GetFamily() == unix.AF_INET6 && ie.GetType() != unix.SOCK_RAW {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, boolInt(ie.GetV6Only())); err != nil {
			return os.NewSyscallError("setsockopt IPV6_V6ONLY", err)
		}
	}
	if err := restoreSockOpts(fd, ie.GetOpts()); err != nil {
		return err
	}
	if err := restoreIPOpts(fd, ie.GetFamily(), ie.GetIpOpts()); err != nil {
		return err
	}
	switch {
	case ie.GetType() == unix.SOCK_RAW:
		if err := restoreRaw(fd, ie, ends); err != nil {
			return err
		}
	case ie.GetType() == unix.SOCK_DGRAM:
		if ends.bound {
			if err := bindInet(fd, ie, ends); err != nil {
				return err
			}
		}
		if ends.connected {
			if err := unix.Connect(fd, ends.remoteSa); err != nil {
				return fmt.Errorf("connect to %s: %w", ends.remote, os.NewSyscallError("connect", err))
			}
		}
		if err := shutdownDgram(fd, ie.GetShutdown()); err != nil {
			return err
		}
	case ie.GetState() == linux.TCPListen:
		if err := bindInet(fd, ie, ends); err != nil {
			return err
		}
		if err := unix.Listen(fd, int(ie.GetBacklog())); err != nil {
			return os.NewSyscallError("listen", err)
		}
	case ie.GetState() == linux.TCPClose:
		if ends.bound {
			if err := bindInet(fd, ie, ends); err != nil {
				return err
			}
		}
	case ie.GetState() == linux.TCPSynSent:
		if err := restoreSynSent(fd, ie, ends); err != nil {
			return err
		}
	case isTCPConn(ie.GetState()):
		if err := restoreTCPConn(r, fd, ie, ends); err != nil {
			return err
		}
	default:
		return fmt.Errorf("TCP state %s: %w", tcpStateName(ie.GetState()), images.ErrCorrupt)
	}
	if err := restoreTCPOpts(fd, ie, isTCPConn(ie.GetState()) && !r.Opts.TCPClose); err != nil {
		return err
	}
	return files.AnonSetfl(fd, ie.GetFlags())
}

// bindInet binds fd to the entry's local address. An address that is
// not (yet) on this host, as after a migration, is taken with
// IP_FREEBIND. SO_REUSEADDR is on for the bind only, as criu does: the
// old socket may have left TIME_WAIT connections on its port, and a
// listener shares its port with the connections it accepted; a socket
// that holds the port for real (another listener) still makes it fail.
func bindInet(fd int, ie *sk_inet.InetSkEntry, ends *inetEnds) error {
	reuse := ie.GetOpts().GetReuseaddr()
	if !reuse {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return os.NewSyscallError("setsockopt SO_REUSEADDR", err)
		}
		defer unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 0)
	}
	err := unix.Bind(fd, ends.localSa)
	if err == unix.EADDRNOTAVAIL && !ie.GetIpOpts().GetFreebind() {
		if serr := setFreebind(fd, ie.GetFamily(), true); serr == nil {
			err = unix.Bind(fd, ends.localSa)
			if serr := setFreebind(fd, ie.GetFamily(), false); serr != nil && err == nil {
				err = serr
			}
		}
	}
	switch {
	case err == unix.EADDRINUSE:
		return fmt.Errorf("bind to %s: %w: another socket holds it now (or, for a socket without SO_REUSEADDR, connections it left in TIME_WAIT, for up to 60 s); free it and restore again", ends.local, err)
	case err != nil:
		return fmt.Errorf("bind to %s: %w", ends.local, os.NewSyscallError("bind", err))
	}
	return nil
}

func setFreebind(fd int, family uint32, on bool) error {
	if family == unix.AF_INET6 {
		return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, boolInt(on))
	}
	return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_FREEBIND, boolInt(on))
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// dumpIPOpts reads the IP level options criu keeps.
func dumpIPOpts(sk, family int) (*sk_inet.IpOptsEntry, error) {
	o := &sk_inet.IpOptsEntry{}
	if family == unix.AF_INET6 {
		// criu 4.2 keeps IPV6_RECVPKTINFO as pktinfo; the traffic class
		// and hop limit go where IPv4's TOS and TTL do.
		for _, opt := range []struct {
			name string
			opt  int
			set  func(int)
		}{
			{"IPV6_FREEBIND", unix.IPV6_FREEBIND, func(v int) { o.Freebind = proto.Bool(v != 0) }},
			{"IPV6_RECVPKTINFO", unix.IPV6_RECVPKTINFO, func(v int) { o.Pktinfo = proto.Bool(v != 0) }},
			{"IPV6_TCLASS", unix.IPV6_TCLASS, func(v int) { o.Tos = proto.Uint32(uint32(v)) }},
			{"IPV6_UNICAST_HOPS", unix.IPV6_UNICAST_HOPS, func(v int) { o.Ttl = proto.Uint32(uint32(v)) }},
		} {
			v, err := unix.GetsockoptInt(sk, unix.IPPROTO_IPV6, opt.opt)
			if err == unix.EOPNOTSUPP || err == unix.ENOPROTOOPT {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("getsockopt %s: %w", opt.name, err)
			}
			opt.set(v)
		}
		return o, nil
	}
	for _, opt := range []struct {
		name string
		opt  int
		set  func(int)
	}{
		{"IP_FREEBIND", unix.IP_FREEBIND, func(v int) { o.Freebind = proto.Bool(v != 0) }},
		{"IP_PKTINFO", unix.IP_PKTINFO, func(v int) { o.Pktinfo = proto.Bool(v != 0) }},
		{"IP_TOS", unix.IP_TOS, func(v int) { o.Tos = proto.Uint32(uint32(v)) }},
		{"IP_TTL", unix.IP_TTL, func(v int) { o.Ttl = proto.Uint32(uint32(v)) }},
	} {
		v, err := unix.GetsockoptInt(sk, unix.IPPROTO_IP, opt.opt)
		if err == unix.EOPNOTSUPP {
			continue // MPTCP has but a few IP options: the others stay unset
		}
		if err != nil {
			return nil, fmt.Errorf("getsockopt %s: %w", opt.name, err)
		}
		opt.set(v)
	}
	return o, nil
}

func restoreIPOpts(fd int, family uint32, o *sk_inet.IpOptsEntry) error {
	if o == nil {
		return nil
	}
	set := func(level, opt int, name string, v int) error {
		if err := unix.SetsockoptInt(fd, level, opt, v); err != nil {
			return os.NewSyscallError("setsockopt "+name, err)
		}
		return nil
	}
	var errs []error
	if family == unix.AF_INET6 {
		if o.Freebind != nil {
			errs = append(errs, set(unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, "IPV6_FREEBIND", boolInt(o.GetFreebind())))
		}
		if o.Pktinfo != nil {
			errs = append(errs, set(unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO", boolInt(o.GetPktinfo())))
		}
		if o.Tos != nil && o.GetTos() != 0 {
			errs = append(errs, set(unix.IPPROTO_IPV6, unix.IPV6_TCLASS, "IPV6_TCLASS", int(o.GetTos())))
		}
		// 64 is what the route gives a socket that never set it.
		if o.Ttl != nil && o.GetTtl() != 64 {
			errs = append(errs, set(unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS", int(o.GetTtl())))
		}
		return errors.Join(errs...)
	}
	if o.Freebind != nil {
		errs = append(errs, set(unix.IPPROTO_IP, unix.IP_FREEBIND, "IP_FREEBIND", boolInt(o.GetFreebind())))
	}
	if o.Pktinfo != nil {
		errs = append(errs, set(unix.IPPROTO_IP, unix.IP_PKTINFO, "IP_PKTINFO", boolInt(o.GetPktinfo())))
	}
	if o.Tos != nil {
		errs = append(errs, set(unix.IPPROTO_IP, unix.IP_TOS, "IP_TOS", int(o.GetTos())))
	}
	if o.Ttl != nil {
		errs = append(errs, set(unix.IPPROTO_IP, unix.IP_TTL, "IP_TTL", int(o.GetTtl())))
	}
	return errors.Join(errs...)
}

// dumpSockOpts reads the SOL_SOCKET options criu keeps (sockets.c
// dump_socket_opts), for every family.
func dumpSockOpts(sk int) (*sk_opts.SkOptsEntry, error) {
	o := &sk_opts.SkOptsEntry{}
	ints := []struct {
		name string
		opt  int
		set  func(int)
	}{
		{"SO_SNDBUF", unix.SO_SNDBUF, func(v int) { o.SoSndbuf = proto.Uint32(uint32(v)) }},
		{"SO_RCVBUF", unix.SO_RCVBUF, func(v int) { o.SoRcvbuf = proto.Uint32(uint32(v)) }},
		{"SO_REUSEADDR", unix.SO_REUSEADDR, func(v int) { o.Reuseaddr = proto.Bool(v != 0) }},
		{"SO_REUSEPORT", unix.SO_REUSEPORT, func(v int) { o.SoReuseport = proto.Bool(v != 0) }},
		{"SO_PRIORITY", unix.SO_PRIORITY, func(v int) { o.SoPriority = proto.Uint32(uint32(v)) }},
		{"SO_RCVLOWAT", unix.SO_RCVLOWAT, func(v int) { o.SoRcvlowat = proto.Uint32(uint32(v)) }},
		{"SO_MARK", unix.SO_MARK, func(v int) { o.SoMark = proto.Uint32(uint32(v)) }},
		{"SO_PASSCRED", unix.SO_PASSCRED, func(v int) { o.SoPasscred = proto.Bool(v != 0) }},
		{"SO_PASSSEC", unix.SO_PASSSEC, func(v int) { o.SoPasssec = proto.Bool(v != 0) }},
		{"SO_DONTROUTE", unix.SO_DONTROUTE, func(v int) { o.SoDontroute = proto.Bool(v != 0) }},
		{"SO_NO_CHECK", unix.SO_NO_CHECK, func(v int) { o.SoNoCheck = proto.Bool(v != 0) }},
		{"SO_BROADCAST", unix.SO_BROADCAST, func(v int) { o.SoBroadcast = proto.Bool(v != 0) }},
		{"SO_KEEPALIVE", unix.SO_KEEPALIVE, func(v int) { o.SoKeepalive = proto.Bool(v != 0) }},
		{"SO_OOBINLINE", unix.SO_OOBINLINE, func(v int) { o.SoOobinline = proto.Uint32(uint32(v)) }},
		{"SO_BUF_LOCK", unix.SO_BUF_LOCK, func(v int) { o.SoBufLock = proto.Uint32(uint32(v)) }},
	}
	for _, opt := range ints {
		v, err := unix.GetsockoptInt(sk, unix.SOL_SOCKET, opt.opt)
		if err == unix.EOPNOTSUPP || err == unix.ENOPROTOOPT {
			continue // not an option of this family (SO_PASSCRED of inet sockets)
		}
		if err != nil {
			return nil, fmt.Errorf("getsockopt %s: %w", opt.name, err)
		}
		opt.set(v)
	}
	for _, tmo := range []struct {
		name     string
		opt      int
		sec, use **uint64
	}{
		{"SO_SNDTIMEO", unix.SO_SNDTIMEO, &o.SoSndTmoSec, &o.SoSndTmoUsec},
		{"SO_RCVTIMEO", unix.SO_RCVTIMEO, &o.SoRcvTmoSec, &o.SoRcvTmoUsec},
	} {
		tv, err := unix.GetsockoptTimeval(sk, unix.SOL_SOCKET, tmo.opt)
		if err != nil {
			return nil, fmt.Errorf("getsockopt %s: %w", tmo.name, err)
		}
		*tmo.sec, *tmo.use = proto.Uint64(uint64(tv.Sec)), proto.Uint64(uint64(tv.Usec))
	}
	l, err := unix.GetsockoptLinger(sk, unix.SOL_SOCKET, unix.SO_LINGER)
	if err != nil {
		return nil, fmt.Errorf("getsockopt SO_LINGER: %w", err)
	}
	if l.Onoff != 0 {
		o.SoLinger = proto.Uint32(uint32(l.Linger))
	}
	if dev, err := unix.GetsockoptString(sk, unix.SOL_SOCKET, unix.SO_BINDTODEVICE); err == nil && dev != "" {
		o.SoBoundDev = proto.String(dev)
	}
	if o.SoFilter, err = dumpSockFilter(sk); err != nil {
		return nil, err
	}
	return o, nil
}

// restoreSockOpts sets what dumpSockOpts read. The buffer sizes are set
// with the FORCE variants (stasis is root; a size autotuned above
// wmem_max/rmem_max must come back whole, the queues refilled into it
// must fit), halved because the kernel doubles them, and SO_BUF_LOCK
// then gives back the dumped locks (none, if they were autotuned).
func restoreSockOpts(fd int, o *sk_opts.SkOptsEntry) error {
	if o == nil {
		return nil
	}
	var errs []error
	set := func(opt int, name string, v int) {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, v); err != nil {
			errs = append(errs, os.NewSyscallError("setsockopt "+name, err))
		}
	}
	// MPTCP has no SO_BUF_LOCK: forcing its buffers would lock them, so
	// they are forced only where they were locked (set by the program).
	if p, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err == nil && p == unix.IPPROTO_MPTCP {
		if o.GetSoBufLock()&unix.SOCK_SNDBUF_LOCK != 0 {
			set(unix.SO_SNDBUFFORCE, "SO_SNDBUFFORCE", int(o.GetSoSndbuf()/2))
		}
		if o.GetSoBufLock()&unix.SOCK_RCVBUF_LOCK != 0 {
			set(unix.SO_RCVBUFFORCE, "SO_RCVBUFFORCE", int(o.GetSoRcvbuf()/2))
		}
	} else {
		set(unix.SO_SNDBUFFORCE, "SO_SNDBUFFORCE", int(o.GetSoSndbuf()/2))
		set(unix.SO_RCVBUFFORCE, "SO_RCVBUFFORCE", int(o.GetSoRcvbuf()/2))
		if o.SoBufLock != nil {
			set(unix.SO_BUF_LOCK, "SO_BUF_LOCK", int(o.GetSoBufLock()))
		}
	}
	set(unix.SO_REUSEADDR, "SO_REUSEADDR", boolInt(o.GetReuseaddr()))
	set(unix.SO_REUSEPORT, "SO_REUSEPORT", boolInt(o.GetSoReuseport()))
	if o.SoPriority != nil {
		set(unix.SO_PRIORITY, "SO_PRIORITY", int(o.GetSoPriority()))
	}
	if o.SoRcvlowat != nil && o.GetSoRcvlowat() != 1 {
		set(unix.SO_RCVLOWAT, "SO_RCVLOWAT", int(o.GetSoRcvlowat()))
	}
	if o.GetSoMark() != 0 {
		set(unix.SO_MARK, "SO_MARK", int(o.GetSoMark()))
	}
	for _, b := range []struct {
		name string
		opt  int
		v    bool
	}{
		{"SO_PASSCRED", unix.SO_PASSCRED, o.GetSoPasscred()},
		{"SO_PASSSEC", unix.SO_PASSSEC, o.GetSoPasssec()},
		{"SO_DONTROUTE", unix.SO_DONTROUTE, o.GetSoDontroute()},
		{"SO_NO_CHECK", unix.SO_NO_CHECK, o.GetSoNoCheck()},
		{"SO_BROADCAST", unix.SO_BROADCAST, o.GetSoBroadcast()},
		{"SO_KEEPALIVE", unix.SO_KEEPALIVE, o.GetSoKeepalive()},
	} {
		if b.v {
			set(b.opt, b.name, 1)
		}
	}
	if o.GetSoOobinline() != 0 {
		set(unix.SO_OOBINLINE, "SO_OOBINLINE", 1)
	}
	if o.GetSoSndTmoSec() != 0 || o.GetSoSndTmoUsec() != 0 {
		tv := unix.Timeval{Sec: int64(o.GetSoSndTmoSec()), Usec: int64(o.GetSoSndTmoUsec())}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
			errs = append(errs, os.NewSyscallError("setsockopt SO_SNDTIMEO", err))
		}
	}
	if o.GetSoRcvTmoSec() != 0 || o.GetSoRcvTmoUsec() != 0 {
		tv := unix.Timeval{Sec: int64(o.GetSoRcvTmoSec()), Usec: int64(o.GetSoRcvTmoUsec())}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			errs = append(errs, os.NewSyscallError("setsockopt SO_RCVTIMEO", err))
		}
	}
	if o.SoLinger != nil {
		l := unix.Linger{Onoff: 1, Linger: int32(o.GetSoLinger())}
		if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &l); err != nil {
			errs = append(errs, os.NewSyscallError("setsockopt SO_LINGER", err))
		}
	}
	if dev := o.GetSoBoundDev(); dev != "" {
		if err := unix.BindToDevice(fd, dev); err != nil {
			errs = append(errs, fmt.Errorf("bind to device %s: %w", dev, err))
		}
	}
	errs = append(errs, restoreSockFilter(fd, o.GetSoFilter()))
	return errors.Join(errs...)
}

var sockTypeNames = map[int]string{
	unix.SOCK_STREAM: "SOCK_STREAM", unix.SOCK_DGRAM: "SOCK_DGRAM", unix.SOCK_RAW: "SOCK_RAW",
	unix.SOCK_SEQPACKET: "SOCK_SEQPACKET", unix.SOCK_RDM: "SOCK_RDM", unix.SOCK_PACKET: "SOCK_PACKET",
}

func sockTypeName(typ int) string {
	if n, ok := sockTypeNames[typ]; ok {
		return n
	}
	return fmt.Sprintf("%d", typ)
}

// ipProtoNames name the protocols a refused inet socket may have, so
// that the refusal says which it is.
var ipProtoNames = map[int]string{
	unix.IPPROTO_IP: "0", unix.IPPROTO_ICMP: "1 (ICMP)", unix.IPPROTO_TCP: "6 (TCP)", unix.IPPROTO_UDP: "17 (UDP)",
	unix.IPPROTO_DCCP: "33 (DCCP)", unix.IPPROTO_ICMPV6: "58 (ICMPv6)", unix.IPPROTO_SCTP: "132 (SCTP)",
	unix.IPPROTO_UDPLITE: "136 (UDP-Lite)", unix.IPPROTO_MPTCP: "262 (MPTCP)",
}

func ipProtoName(p int) string {
	if n, ok := ipProtoNames[p]; ok {
		return n
	}
	return fmt.Sprintf("%d", p)
}
