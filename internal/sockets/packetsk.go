package sockets

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	packet_sock "github.com/checkpoint-restore/go-criu/v8/crit/images/packet-sock"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/images"
)

// Packet sockets (AF_PACKET, criu's sk-packet.c): type, protocol, the
// interface they are bound to, the SOL_PACKET options, multicast
// memberships and fanout group, in files.img as PACKETSK entries. Most of
// it has no getsockopt (the interface index of an unbound socket,
// copy_thresh, the memberships, whether a fanout group is joined): it
// comes from packet_diag, as criu takes it. Frames queued on the socket
// are dropped, as criu drops them (a capture loses them as it would under
// load).
//
// Rings (PACKET_RX_RING, PACKET_TX_RING, any TPACKET version) are kept as
// criu keeps them: their geometry from packet_diag, set again after the
// version; the task's mapping of them is a socket VMA of internal/mem,
// mapped again from the new socket at its address. What the ring held is
// not kept (criu neither): the kernel starts again at its first frame.
// SOCK_PACKET sockets (the obsolete interface, bound by device name) have
// no SOL_PACKET options; they are bound again by the name of their
// interface index.
//
// Not supported, refused at dump: fanout groups that steer by a BPF
// program (the program cannot be read back), and PACKET_QDISC_BYPASS and
// PACKET_IGNORE_OUTGOING, which the image has no field for.

func init() {
	socketFamilies[unix.AF_PACKET] = dumpPacket
	files.Register(&files.Kind{Type: fdinfo.FdTypes_PACKETSK, Open: openPacket})
}

// include/uapi/linux/packet_diag.h
const (
	packetShowInfo    = 0x01
	packetShowMclist  = 0x02
	packetShowRingCfg = 0x04
	packetShowFanout  = 0x08
	packetDiagInfo    = 0
	packetDiagMclist  = 1
	packetDiagRxRing  = 2
	packetDiagTxRing  = 3
	packetDiagFanout  = 4
	packetDiagReqLen  = 20 // struct packet_diag_req
	packetDiagMsgLen  = 16 // struct packet_diag_msg
	packetDiagInfoLen = 24 // struct packet_diag_info
	packetMclistLen   = 44 // struct packet_diag_mclist
	packetRingLen     = 28 // struct packet_diag_ring

	pdiAuxdata = 0x2
	pdiOrigdev = 0x4
	pdiVnethdr = 0x8
	pdiLoss    = 0x10

	maxAddrLen = 32 // MAX_ADDR_LEN, the address of a packet_mreq_max

	// fanoutUniqueID is PACKET_FANOUT_FLAG_UNIQUEID in the flags byte
	// packet_diag reports (the top byte of the fanout word).
	fanoutUniqueID = unix.PACKET_FANOUT_FLAG_UNIQUEID >> 8
	noFanout       = 0xffffffff // packet_sock_entry.fanout's default
)

// packetDiag is one packet socket as packet_diag tells it.
type packetDiag struct {
	Ino              uint32
	Type             uint8
	Protocol         uint16 // network byte order, as socket() takes it
	Ifindex          uint32
	Version, Reserve uint32
	CopyThresh       uint32
	Tstamp, Flags    uint32
	Mclist           []packetMc
	Fanout           uint32 // noFanout if none
	RxRing, TxRing   *packet_sock.PacketRing
}

// packetMc is one membership (PACKET_ADD_MEMBERSHIP), Count times.
type packetMc struct {
	Ifindex, Count uint32
	Type           uint16
	Addr           []byte
}

// readPacketDiag lists the packet sockets of the network namespace of
// socket sk.
func readPacketDiag(sk int) (map[uint32]*packetDiag, error) {
	r := make([]byte, packetDiagReqLen)
	r[0] = unix.AF_PACKET
	binary.NativeEndian.PutUint32(r[8:], packetShowInfo|packetShowMclist|packetShowRingCfg|packetShowFanout)
	binary.NativeEndian.PutUint32(r[12:], 0xffffffff) // no cookie
	binary.NativeEndian.PutUint32(r[16:], 0xffffffff)
	out := map[uint32]*packetDiag{}
	err := sockDiagDump("packet sockets", sk, r, func(b []byte) error {
		d, err := parsePacketDiag(b)
		if err != nil {
			return err
		}
		out[d.Ino] = d
		return nil
	})
	return out, err
}

// parsePacketDiag decodes one packet_diag_msg and its attributes.
func parsePacketDiag(b []byte) (*packetDiag, error) {
	if len(b) < packetDiagMsgLen {
		return nil, fmt.Errorf("sock_diag: packet_diag_msg of %d bytes, want %d", len(b), packetDiagMsgLen)
	}
	ne := binary.NativeEndian
	// pdiag_num is the protocol in host order (ntohs of po->num).
	d := &packetDiag{Type: b[1], Protocol: htons(ne.Uint16(b[2:])), Ino: ne.Uint32(b[4:]), Fanout: noFanout}
	info := false
	for a := b[packetDiagMsgLen:]; len(a) >= 4; {
		l, typ := int(ne.Uint16(a)), ne.Uint16(a[2:])&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER)
		if l < 4 || l > len(a) {
			return nil, fmt.Errorf("sock_diag: packet socket:[%d]: attribute %d of length %d in %d bytes", d.Ino, typ, l, len(a))
		}
		v := a[4:l]
		short := func(n int) error {
			if len(v) < n {
				return fmt.Errorf("sock_diag: packet socket:[%d]: attribute %d of %d bytes, want %d", d.Ino, typ, len(v), n)
			}
			return nil
		}
		switch typ {
		case packetDiagInfo:
			if err := short(packetDiagInfoLen); err != nil {
				return nil, err
			}
			d.Ifindex, d.Version, d.Reserve = ne.Uint32(v), ne.Uint32(v[4:]), ne.Uint32(v[8:])
			d.CopyThresh, d.Tstamp, d.Flags = ne.Uint32(v[12:]), ne.Uint32(v[16:]), ne.Uint32(v[20:])
			info = true
		case packetDiagMclist:
			for m := v; len(m) >= packetMclistLen; m = m[packetMclistLen:] {
				alen := min(int(ne.Uint16(m[10:])), maxAddrLen)
				d.Mclist = append(d.Mclist, packetMc{Ifindex: ne.Uint32(m), Count: ne.Uint32(m[4:]),
					Type: ne.Uint16(m[8:]), Addr: append([]byte{}, m[12:12+alen]...)})
			}
		case packetDiagRxRing, packetDiagTxRing:
			if err := short(packetRingLen); err != nil {
				return nil, err
			}
			u := func(i int) *uint32 { return proto.Uint32(ne.Uint32(v[4*i:])) }
			ring := &packet_sock.PacketRing{BlockSize: u(0), BlockNr: u(1), FrameSize: u(2), FrameNr: u(3),
				RetireTmo: u(4), SizeofPriv: u(5), Features: u(6)}
			if typ == packetDiagRxRing {
				d.RxRing = ring
			} else {
				d.TxRing = ring
			}
		case packetDiagFanout:
			if err := short(4); err != nil {
				return nil, err
			}
			d.Fanout = ne.Uint32(v)
		}
		a = a[min((l+3)&^3, len(a)):]
	}
	if !info {
		return nil, fmt.Errorf("sock_diag: packet socket:[%d] without PACKET_DIAG_INFO", d.Ino)
	}
	return d, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// packetSockets is the packet_diag of a dump, read at its first packet
// socket (one dump request for all of them).
type packetSockets struct{ diag map[uint32]*packetDiag }

func dumpPacket(t *files.Table, fd *files.Fd, sk int) (*fdinfo.FileEntry, error) {
	st := files.DumpState(t, "packetsk", func() *packetSockets { return &packetSockets{} })
	if st.diag == nil {
		diag, err := readPacketDiag(sk)
		if err != nil {
			return nil, err
		}
		st.diag = diag
	}
	d := st.diag[uint32(fd.Stat.Ino)]
	if d == nil {
		return nil, &files.UnsupportedError{Pid: fd.Pid, Fd: fd.Num, Target: fd.Target,
			Kind: "a packet socket of another network namespace (packet_diag of stasis' namespace does not list it)"}
	}
	if err := packetSupported(fd, sk, d); err != nil {
		return nil, err
	}
	pe := &packet_sock.PacketSockEntry{
		Id: proto.Uint32(fd.ID), Type: proto.Uint32(uint32(d.Type)), Protocol: proto.Uint32(uint32(d.Protocol)),
		Flags: proto.Uint32(fd.Flags()), Ifindex: proto.Uint32(d.Ifindex), Fown: files.AnonFown(),
		Version: proto.Uint32(d.Version), Reserve: proto.Uint32(d.Reserve),
		AuxData: proto.Bool(d.Flags&pdiAuxdata != 0), OrigDev: proto.Bool(d.Flags&pdiOrigdev != 0),
		VnetHdr: proto.Bool(d.Flags&pdiVnethdr != 0), Loss: proto.Bool(d.Flags&pdiLoss != 0),
		Timestamp: proto.Uint32(d.Tstamp), CopyThresh: proto.Uint32(d.CopyThresh),
		RxRing: d.RxRing, TxRing: d.TxRing,
	}
	// A membership added n times (the kernel counts them) is kept as n
	// entries: adding each again gives the count back, with criu too.
	for _, m := range d.Mclist {
		for range m.Count {
			pe.Mclist = append(pe.Mclist, &packet_sock.PacketMclist{Index: proto.Uint32(m.Ifindex), Type: proto.Uint32(uint32(m.Type)), Addr: m.Addr})
		}
	}
	if d.Fanout != noFanout {
		// packet_diag tells that the socket is in a group, but not the
		// group's flags (DEFRAG, ROLLOVER, ...); getsockopt tells all.
		v, err := unix.GetsockoptInt(sk, unix.SOL_PACKET, unix.PACKET_FANOUT)
		if err != nil {
			return nil, os.NewSyscallError("getsockopt PACKET_FANOUT", err)
		}
		pe.Fanout = proto.Uint32(uint32(v))
	}
	var err error
	if pe.Opts, err = dumpSockOpts(sk); err != nil {
		return nil, err
	}
	return &fdinfo.FileEntry{Type: fdinfo.FdTypes_PACKETSK.Enum(), Id: proto.Uint32(fd.ID), Psk: pe}, nil
}

// packetSupported refuses what a packet_sock_entry cannot hold.
func packetSupported(fd *files.Fd, sk int, d *packetDiag) error {
	refuse := func(what, hint string) error {
		return &files.UnsupportedError{Pid: fd.Pid, Fd: fd.Num, Target: fd.Target, Kind: "a packet socket " + what, Hint: hint}
	}
	if d.Type == unix.SOCK_PACKET {
		// No SOL_PACKET option, membership or fanout group exists for
		// it (getsockopt gives EOPNOTSUPP).
		return nil
	}
	if d.Fanout != noFanout {
		switch typ := (d.Fanout >> 16) & 0xff; typ {
		case unix.PACKET_FANOUT_CBPF, unix.PACKET_FANOUT_EBPF:
			return refuse(fmt.Sprintf("in fanout group %d steered by a BPF program (PACKET_FANOUT_CBPF/EBPF)", d.Fanout&0xffff),
				"the program of a fanout group cannot be read back")
		}
	}
	for _, m := range d.Mclist {
		switch m.Type {
		case unix.PACKET_MR_MULTICAST, unix.PACKET_MR_UNICAST, unix.PACKET_MR_PROMISC, unix.PACKET_MR_ALLMULTI:
		default:
			return refuse(fmt.Sprintf("with a membership of unknown type %d", m.Type), "")
		}
	}
	for _, o := range []struct {
		name string
		opt  int
	}{{"PACKET_QDISC_BYPASS", unix.PACKET_QDISC_BYPASS}, {"PACKET_IGNORE_OUTGOING", unix.PACKET_IGNORE_OUTGOING}} {
		v, err := unix.GetsockoptInt(sk, unix.SOL_PACKET, o.opt)
		if err != nil {
			return fmt.Errorf("getsockopt %s: %w", o.name, err)
		}
		if v != 0 {
			return refuse("with "+o.name+" set", "criu's image has no field for it; clear it before the dump")
		}
	}
	return nil
}

// openPacket creates a packet socket of an entry again: bound to the
// same interface index (an index is only meaningful in the same network
// namespace, as criu keeps it), then the options, memberships and fanout
// group, in criu's order: the fanout group is joined last, when the
// socket is bound and receiving.
func openPacket(r *files.Restorer, fe *fdinfo.FileEntry) (*os.File, error) {
	pe := fe.GetPsk()
	if pe == nil || fe.GetType() != fdinfo.FdTypes_PACKETSK {
		return nil, files.NotKind(fe, "a packet socket")
	}
	what := fmt.Sprintf("packet socket of type %d, protocol %#04x, interface %d (file id %d)",
		pe.GetType(), htons(uint16(pe.GetProtocol())), pe.GetIfindex(), fe.GetId())
	switch {
	case pe.GetType() != unix.SOCK_RAW && pe.GetType() != unix.SOCK_DGRAM && pe.GetType() != unix.SOCK_PACKET:
		return nil, fmt.Errorf("restore %s: type %d: %w (stasis restores SOCK_RAW, SOCK_DGRAM and SOCK_PACKET packet sockets)", what, pe.GetType(), files.ErrUnsupported)
	case pe.GetProtocol() > 0xffff:
		return nil, fmt.Errorf("restore %s: protocol %#x: %w", what, pe.GetProtocol(), images.ErrCorrupt)
	}
	fd, err := socket(r, unix.AF_PACKET, int(pe.GetType())|unix.SOCK_CLOEXEC, int(pe.GetProtocol()))
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", what, os.NewSyscallError("socket", err))
	}
	f := files.NewAnonFile(fd, "socket")
	restore := restorePacket
	if pe.GetType() == unix.SOCK_PACKET {
		restore = restoreSockPacket
	}
	if err := restore(fd, pe); err != nil {
		f.Close()
		return nil, fmt.Errorf("restore %s: %w", what, err)
	}
	return f, nil
}

func restorePacket(fd int, pe *packet_sock.PacketSockEntry) error {
	// Protocol 0 in the address keeps the socket's own.
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: int(pe.GetIfindex())}); err != nil {
		if err == unix.ENODEV || err == unix.ENXIO {
			return fmt.Errorf("bind to interface index %d: %w: there is no such interface in this network namespace", pe.GetIfindex(), err)
		}
		return fmt.Errorf("bind to interface index %d: %w", pe.GetIfindex(), os.NewSyscallError("bind", err))
	}
	set := func(opt int, name string, v int) error {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, opt, v); err != nil {
			return os.NewSyscallError("setsockopt "+name, err)
		}
		return nil
	}
	for _, o := range []struct {
		name string
		opt  int
		v    int
		set  bool
	}{
		{"PACKET_VERSION", unix.PACKET_VERSION, int(pe.GetVersion()), true},
		{"PACKET_RESERVE", unix.PACKET_RESERVE, int(pe.GetReserve()), true},
		{"PACKET_TIMESTAMP", unix.PACKET_TIMESTAMP, int(pe.GetTimestamp()), true},
		{"PACKET_COPY_THRESH", unix.PACKET_COPY_THRESH, int(pe.GetCopyThresh()), true},
		{"PACKET_AUXDATA", unix.PACKET_AUXDATA, 1, pe.GetAuxData()},
		{"PACKET_ORIGDEV", unix.PACKET_ORIGDEV, 1, pe.GetOrigDev()},
		{"PACKET_VNET_HDR", unix.PACKET_VNET_HDR, 1, pe.GetVnetHdr()},
		{"PACKET_LOSS", unix.PACKET_LOSS, 1, pe.GetLoss()},
	} {
		if o.set {
			if err := set(o.opt, o.name, o.v); err != nil {
				return err
			}
		}
	}
	if err := setPacketRings(fd, pe); err != nil {
		return err
	}
	for _, m := range pe.GetMclist() {
		if err := addPacketMembership(fd, m); err != nil {
			return err
		}
	}
	if pe.Fanout != nil && pe.GetFanout() != noFanout {
		// A group of a unique id (PACKET_FANOUT_FLAG_UNIQUEID) was given
		// its id by the kernel; it is joined again by that id.
		v := pe.GetFanout()
		v &^= fanoutUniqueID << 24
		if err := set(unix.PACKET_FANOUT, "PACKET_FANOUT", int(v)); err != nil {
			return fmt.Errorf("join fanout group %d (type %d, flags %#x): %w; a socket of this host may hold the group with another type",
				v&0xffff, (v>>16)&0xff, v>>24, err)
		}
	}
	if err := restoreSockOpts(fd, pe.GetOpts()); err != nil {
		return err
	}
	return files.AnonSetfl(fd, pe.GetFlags())
}

// addPacketMembership adds one membership: a struct packet_mreq_max
// {int ifindex; u16 type, alen; u8 address[32]}.
func addPacketMembership(fd int, m *packet_sock.PacketMclist) error {
	if len(m.GetAddr()) > maxAddrLen {
		return fmt.Errorf("membership of %d address bytes: %w", len(m.GetAddr()), images.ErrCorrupt)
	}
	b := make([]byte, 8+maxAddrLen)
	binary.NativeEndian.PutUint32(b, m.GetIndex())
	binary.NativeEndian.PutUint16(b[4:], uint16(m.GetType()))
	binary.NativeEndian.PutUint16(b[6:], uint16(len(m.GetAddr())))
	copy(b[8:], m.GetAddr())
	if err := setsockoptBytes(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, b); err != nil {
		return fmt.Errorf("add membership of type %d, address %x on interface %d: %w",
			m.GetType(), m.GetAddr(), m.GetIndex(), os.NewSyscallError("setsockopt PACKET_ADD_MEMBERSHIP", err))
	}
	return nil
}

// setPacketRings sets the rings of pe up again, after PACKET_VERSION and
// PACKET_RESERVE (the kernel refuses both once a ring exists). A struct
// tpacket_req3 is given whatever the version: the kernel reads the
// tpacket_req at its start for TPACKET_V1 and V2.
func setPacketRings(fd int, pe *packet_sock.PacketSockEntry) error {
	for _, r := range []struct {
		name string
		opt  int
		ring *packet_sock.PacketRing
	}{{"PACKET_RX_RING", unix.PACKET_RX_RING, pe.GetRxRing()}, {"PACKET_TX_RING", unix.PACKET_TX_RING, pe.GetTxRing()}} {
		if r.ring == nil {
			continue
		}
		// No blocks would free the ring, not make one.
		if r.ring.GetBlockNr() == 0 || r.ring.GetFrameNr() == 0 || r.ring.GetBlockSize() == 0 || r.ring.GetFrameSize() == 0 {
			return fmt.Errorf("%s of %d blocks of %d bytes, %d frames of %d bytes: %w", r.name,
				r.ring.GetBlockNr(), r.ring.GetBlockSize(), r.ring.GetFrameNr(), r.ring.GetFrameSize(), images.ErrCorrupt)
		}
		b := make([]byte, 28) // struct tpacket_req3
		for i, v := range []uint32{r.ring.GetBlockSize(), r.ring.GetBlockNr(), r.ring.GetFrameSize(), r.ring.GetFrameNr(),
			r.ring.GetRetireTmo(), r.ring.GetSizeofPriv(), r.ring.GetFeatures()} {
			binary.NativeEndian.PutUint32(b[4*i:], v)
		}
		if err := setsockoptBytes(fd, unix.SOL_PACKET, r.opt, b); err != nil {
			return fmt.Errorf("set up the ring of %d blocks of %d bytes, %d frames of %d bytes (TPACKET version %d): %w",
				r.ring.GetBlockNr(), r.ring.GetBlockSize(), r.ring.GetFrameNr(), r.ring.GetFrameSize(), pe.GetVersion()+1,
				os.NewSyscallError("setsockopt "+r.name, err))
		}
	}
	return nil
}

// restoreSockPacket binds a SOCK_PACKET socket again: by the name of its
// interface (a struct sockaddr whose sa_data is the name), as bind takes
// it for that type. It has no SOL_PACKET options.
func restoreSockPacket(fd int, pe *packet_sock.PacketSockEntry) error {
	if pe.GetRxRing() != nil || pe.GetTxRing() != nil || len(pe.GetMclist()) > 0 || pe.Fanout != nil && pe.GetFanout() != noFanout {
		return fmt.Errorf("a SOCK_PACKET socket with rings, memberships or a fanout group: %w", images.ErrCorrupt)
	}
	if idx := pe.GetIfindex(); idx != 0 {
		ifi, err := net.InterfaceByIndex(int(idx))
		if err != nil {
			return fmt.Errorf("bind to interface index %d: %w: there is no such interface in this network namespace", idx, err)
		}
		if err := bindSockPacket(fd, ifi.Name); err != nil {
			return fmt.Errorf("bind to interface %s (index %d): %w", ifi.Name, idx, os.NewSyscallError("bind", err))
		}
	}
	if err := restoreSockOpts(fd, pe.GetOpts()); err != nil {
		return err
	}
	return files.AnonSetfl(fd, pe.GetFlags())
}
