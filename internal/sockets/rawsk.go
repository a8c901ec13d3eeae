package sockets

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	sk_inet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-inet"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/linux"
)

// Raw IPv4 and IPv6 sockets (SOCK_RAW: ping, traceroute, routing daemons,
// IPPROTO_RAW senders), as criu 4 keeps them: an inet_sk_entry of type
// SOCK_RAW whose proto is the IP protocol (getsockname shows it as the
// port), with ip_opts.raw holding IP_HDRINCL/IPV6_HDRINCL, IP_NODEFRAG and
// the ICMP_FILTER/ICMPV6_FILTER of ICMP sockets. The state is
// TCP_ESTABLISHED for a connected socket, TCP_CLOSE otherwise, as
// sock_diag shows it. Datagrams queued on the socket are dropped, as for
// UDP.
//
// Refused: an IPv6 raw socket whose IPV6_CHECKSUM offset is not its
// protocol's default (criu's image has no field for the offset).

// icmpFilterWords are the u32 words of struct icmp_filter (IPv4) and
// struct icmp6_filter (IPv6).
const (
	icmpFilterWords  = 1
	icmp6FilterWords = 8
)

// dumpRaw completes the entry of a raw socket.
func dumpRaw(fd *files.Fd, sk int, ie *sk_inet.InetSkEntry) error {
	family, proto_ := int(ie.GetFamily()), int(ie.GetProto())
	r := &sk_inet.IpOptsRawEntry{}
	getBool := func(level, opt int, name string) (bool, error) {
		v, err := unix.GetsockoptInt(sk, level, opt)
		if err != nil {
			return false, os.NewSyscallError("getsockopt "+name, err)
		}
		return v != 0, nil
	}
	filter := func(level, opt int, name string, words int) error {
		b := make([]byte, 4*words)
		n, err := getsockoptBytes(sk, level, opt, b)
		if err != nil {
			return os.NewSyscallError("getsockopt "+name, err)
		}
		for i := 0; i+4 <= n; i += 4 {
			r.IcmpvFilter = append(r.IcmpvFilter, binary.NativeEndian.Uint32(b[i:]))
		}
		return nil
	}
	if family == unix.AF_INET6 {
		hdrincl, err := getBool(unix.IPPROTO_IPV6, unix.IPV6_HDRINCL, "IPV6_HDRINCL")
		if err != nil {
			return err
		}
		if hdrincl {
			r.Hdrincl = proto.Bool(true)
		}
		if proto_ == unix.IPPROTO_ICMPV6 {
			if err := filter(unix.SOL_ICMPV6, unix.ICMPV6_FILTER, "ICMPV6_FILTER", icmp6FilterWords); err != nil {
				return err
			}
		}
		csum, err := unix.GetsockoptInt(sk, unix.IPPROTO_IPV6, unix.IPV6_CHECKSUM)
		if err != nil {
			return os.NewSyscallError("getsockopt IPV6_CHECKSUM", err)
		}
		if csum != rawChecksumOffset(proto_) {
			return &files.UnsupportedError{Pid: fd.Pid, Fd: fd.Num, Target: fd.Target,
				Kind: fmt.Sprintf("a raw IPv6 socket of protocol %d with IPV6_CHECKSUM at offset %d", proto_, csum),
				Hint: "criu's image has no field for the checksum offset"}
		}
	} else {
		hdrincl, err := getBool(unix.IPPROTO_IP, unix.IP_HDRINCL, "IP_HDRINCL")
		if err != nil {
			return err
		}
		if hdrincl {
			r.Hdrincl = proto.Bool(true)
		}
		nodefrag, err := getBool(unix.IPPROTO_IP, unix.IP_NODEFRAG, "IP_NODEFRAG")
		if err != nil {
			return err
		}
		if nodefrag {
			r.Nodefrag = proto.Bool(true)
		}
		if proto_ == unix.IPPROTO_ICMP {
			if err := filter(unix.SOL_RAW, unix.ICMP_FILTER, "ICMP_FILTER", icmpFilterWords); err != nil {
				return err
			}
		}
	}
	if ie.IpOpts == nil {
		ie.IpOpts = &sk_inet.IpOptsEntry{}
	}
	ie.IpOpts.Raw = r
	// getpeername fails on a raw socket connected without a port (as
	// they are), so the peer and state come from the task's
	// /proc/PID/net/raw, which also lists it in its own namespace.
	name := "raw"
	if family == unix.AF_INET6 {
		name = "raw6"
	}
	path := fmt.Sprintf("/proc/%d/net/%s", fd.Pid, name)
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	ent, err := findProcNetRaw(f, fd.Stat.Ino)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if ent == nil {
		return fmt.Errorf("%s does not list socket:[%d]", path, fd.Stat.Ino)
	}
	ie.State = proto.Uint32(ent.state)
	if ent.state == linux.TCPEstablished {
		ie.DstAddr, ie.DstPort = ent.remote, proto.Uint32(ent.remotePort)
	}
	return nil
}

// procNetRaw is one line of /proc/net/raw or raw6.
type procNetRaw struct {
	remote     []uint32 // in criu's words: the kernel prints the same u32s
	remotePort uint32
	state      uint32
}

// findProcNetRaw returns the line of the socket of inode ino, nil if
// none. A line is "sl local:port remote:port st tx:rx tr:when retrnsmt
// uid timeout inode ...", addresses as %08X per u32 word.
func findProcNetRaw(r io.Reader, ino uint64) (*procNetRaw, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 || f[9] != strconv.FormatUint(ino, 10) {
			continue
		}
		addr, port, ok := strings.Cut(f[2], ":")
		if !ok || len(addr)%8 != 0 || (len(addr) != 8 && len(addr) != 32) {
			return nil, fmt.Errorf("remote address %q of socket:[%d]", f[2], ino)
		}
		e := &procNetRaw{}
		for i := 0; i < len(addr); i += 8 {
			w, err := strconv.ParseUint(addr[i:i+8], 16, 32)
			if err != nil {
				return nil, fmt.Errorf("remote address %q of socket:[%d]: %w", f[2], ino, err)
			}
			e.remote = append(e.remote, uint32(w))
		}
		p, err := strconv.ParseUint(port, 16, 16)
		if err != nil {
			return nil, fmt.Errorf("remote port %q of socket:[%d]: %w", f[2], ino, err)
		}
		st, err := strconv.ParseUint(f[3], 16, 8)
		if err != nil {
			return nil, fmt.Errorf("state %q of socket:[%d]: %w", f[3], ino, err)
		}
		e.remotePort, e.state = uint32(p), uint32(st)
		return e, nil
	}
	return nil, sc.Err()
}

// rawChecksumOffset is the IPV6_CHECKSUM a new raw IPv6 socket of a
// protocol has (rawv6_init_sk): -1 is none.
func rawChecksumOffset(proto_ int) int {
	switch proto_ {
	case unix.IPPROTO_ICMPV6:
		return 2
	case unix.IPPROTO_MH:
		return 4
	}
	return -1
}

// restoreRaw binds and connects a raw socket as it was, then sets its
// raw options. The port of its addresses is its protocol, which bind and
// connect ignore.
func restoreRaw(fd int, ie *sk_inet.InetSkEntry, ends *inetEnds) error {
	if !ends.local.Addr().IsUnspecified() || ie.GetIfname() != "" {
		if err := bindInet(fd, ie, ends); err != nil {
			return err
		}
	}
	if ie.GetState() == linux.TCPEstablished {
		if err := unix.Connect(fd, ends.remoteSa); err != nil {
			return fmt.Errorf("connect to %s: %w", ends.remote.Addr(), os.NewSyscallError("connect", err))
		}
	}
	r := ie.GetIpOpts().GetRaw()
	if r == nil {
		return nil
	}
	v6 := ie.GetFamily() == unix.AF_INET6
	setBool := func(level, opt int, name string, v bool) error {
		if err := unix.SetsockoptInt(fd, level, opt, boolInt(v)); err != nil {
			return os.NewSyscallError("setsockopt "+name, err)
		}
		return nil
	}
	if r.Hdrincl != nil {
		level, opt, name := unix.IPPROTO_IP, unix.IP_HDRINCL, "IP_HDRINCL"
		if v6 {
			level, opt, name = unix.IPPROTO_IPV6, unix.IPV6_HDRINCL, "IPV6_HDRINCL"
		}
		if err := setBool(level, opt, name, r.GetHdrincl()); err != nil {
			return err
		}
	}
	if r.Nodefrag != nil && !v6 {
		if err := setBool(unix.IPPROTO_IP, unix.IP_NODEFRAG, "IP_NODEFRAG", r.GetNodefrag()); err != nil {
			return err
		}
	}
	if f := r.GetIcmpvFilter(); len(f) > 0 {
		level, opt, name, words := unix.SOL_RAW, unix.ICMP_FILTER, "ICMP_FILTER", icmpFilterWords
		if v6 {
			level, opt, name, words = unix.SOL_ICMPV6, unix.ICMPV6_FILTER, "ICMPV6_FILTER", icmp6FilterWords
		}
		if len(f) > words {
			return fmt.Errorf("%s of %d words, want at most %d: %w", name, len(f), words, images.ErrCorrupt)
		}
		b := make([]byte, 4*len(f))
		for i, w := range f {
			binary.NativeEndian.PutUint32(b[4*i:], w)
		}
		if err := setsockoptBytes(fd, level, opt, b); err != nil {
			return os.NewSyscallError("setsockopt "+name, err)
		}
	}
	return nil
}
