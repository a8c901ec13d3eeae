package netns

import (
	"encoding/binary"
	"fmt"
	"os"
	"slices"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/macvlan"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/netdev"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/tun"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// The links of a namespace (netdev-ID.img): loopback, veth, bridge,
// macvlan, tun/tap, each with its mtu, address, flags, master and
// per-link sysctls; any other kind is refused by name at dump.

// link is one RTM_NEWLINK answer, parsed.
type link struct {
	index     int32
	flags     uint32
	name      string
	mtu       uint32
	addr      []byte
	parent    uint32 // IFLA_LINK
	hasParent bool
	parentNS  int32 // IFLA_LINK_NETNSID, -1 if none
	master    uint32
	kind      string
	data      map[uint16][]byte // IFLA_INFO_DATA
}

func parseLink(m []byte) (*link, error) {
	if len(m) < unix.NLMSG_HDRLEN+unix.SizeofIfInfomsg {
		return nil, fmt.Errorf("short link message")
	}
	h := m[unix.NLMSG_HDRLEN:]
	l := &link{index: int32(binary.NativeEndian.Uint32(h[4:])), flags: binary.NativeEndian.Uint32(h[8:]), parentNS: -1}
	rtattrs(m, unix.SizeofIfInfomsg, func(typ uint16, v []byte) {
		switch typ {
		case unix.IFLA_IFNAME:
			l.name = unix.ByteSliceToString(v)
		case unix.IFLA_MTU:
			l.mtu = u32(v)
		case unix.IFLA_ADDRESS:
			l.addr = append([]byte(nil), v...)
		case unix.IFLA_LINK:
			l.parent, l.hasParent = u32(v), true
		case unix.IFLA_LINK_NETNSID:
			l.parentNS = int32(u32(v))
		case unix.IFLA_MASTER:
			l.master = u32(v)
		case unix.IFLA_LINKINFO:
			walkAttrs(v, func(t uint16, iv []byte) {
				switch t {
				case unix.IFLA_INFO_KIND:
					l.kind = unix.ByteSliceToString(iv)
				case unix.IFLA_INFO_DATA:
					l.data = map[uint16][]byte{}
					walkAttrs(iv, func(dt uint16, dv []byte) { l.data[dt] = append([]byte(nil), dv...) })
				}
			})
		}
	})
	return l, nil
}

func u32(v []byte) uint32 {
	if len(v) < 4 {
		return 0
	}
	return binary.NativeEndian.Uint32(v)
}

func walkAttrs(b []byte, fn func(typ uint16, val []byte)) {
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b))
		if l < 4 || l > len(b) {
			return
		}
		fn(binary.NativeEndian.Uint16(b[2:])&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER), b[4:l])
		b = b[min(len(b), (l+3)&^3):]
	}
}

// listLinks lists the links of the calling thread's namespace, by index.
func listLinks(nl *rtnl) ([]*link, error) {
	var out []*link
	err := nl.dump("links", unix.RTM_GETLINK, ifinfomsg(0, 0, 0), func(m []byte) error {
		l, err := parseLink(m)
		if err != nil {
			return err
		}
		out = append(out, l)
		return nil
	})
	slices.SortFunc(out, func(a, b *link) int { return int(a.index - b.index) })
	return out, err
}

// IFLA_TUN_* and IFLA_MACVLAN_* (include/uapi/linux/if_link.h).
const (
	iflaTunOwner      = 1
	iflaTunGroup      = 2
	iflaTunType       = 3
	iflaTunPI         = 4
	iflaTunVnetHdr    = 5
	iflaTunPersist    = 6
	iflaTunMultiQueue = 7
	iflaMacvlanMode   = 1
	iflaMacvlanFlags  = 2
	vethInfoPeer      = 1
	iflaNewIfindex    = 49
)

// netdevEntry turns a link into its image entry; ns is the criu id of
// its namespace. It refuses a kind stasis does not restore.
func netdevEntry(l *link, ns uint32) (*netdev.NetDeviceEntry, error) {
	e := &netdev.NetDeviceEntry{
		Ifindex: proto.Uint32(uint32(l.index)),
		Mtu:     proto.Uint32(l.mtu),
		Flags:   proto.Uint32(l.flags),
		Name:    proto.String(l.name),
	}
	if len(l.addr) > 0 && l.flags&unix.IFF_LOOPBACK == 0 {
		e.Address = l.addr
	}
	if l.master != 0 {
		e.Master = proto.Uint32(l.master)
	}
	// The link it stands on (a veth's peer, a macvlan's lower link), in
	// this namespace unless the kernel names another one.
	e.PeerIfindex = proto.Uint32(uint32(l.index))
	if l.hasParent {
		e.PeerIfindex = proto.Uint32(l.parent)
	}
	if l.parentNS < 0 {
		e.PeerNsid = proto.Uint32(ns)
	}
	switch {
	case l.flags&unix.IFF_LOOPBACK != 0:
		e.Type = netdev.NdType_LOOPBACK.Enum()
	case l.kind == "veth":
		e.Type = netdev.NdType_VETH.Enum()
	case l.kind == "bridge":
		e.Type = netdev.NdType_BRIDGE.Enum()
	case l.kind == "macvlan":
		e.Type = netdev.NdType_MACVLAN.Enum()
		e.Macvlan = &macvlan.MacvlanLinkEntry{Mode: proto.Uint32(u32(l.data[iflaMacvlanMode]))}
		if f, ok := l.data[iflaMacvlanFlags]; ok && len(f) >= 2 {
			e.Macvlan.Flags = proto.Uint32(uint32(binary.NativeEndian.Uint16(f)))
		}
	case l.kind == "tun":
		e.Type = netdev.NdType_TUN.Enum()
		e.Tun = tunEntry(l)
	default:
		kind := l.kind
		if kind == "" {
			kind = "a device without a kind"
		}
		return nil, fmt.Errorf("link %s (index %d) is %s: only lo, veth, bridge, macvlan and tun/tap links are %w", l.name, l.index, kind, ErrNotSupported)
	}
	return e, nil
}

// tun flags (include/uapi/linux/if_tun.h).
const (
	iffTun        = 0x0001
	iffTap        = 0x0002
	iffMultiQueue = 0x0100
	iffPersist    = 0x0800
	iffNoPI       = 0x1000
	iffVnetHdr    = 0x4000
)

func tunEntry(l *link) *tun.TunLinkEntry {
	flags := uint32(iffTun)
	if t := l.data[iflaTunType]; len(t) > 0 && t[0] == iffTap {
		flags = iffTap
	}
	if v := l.data[iflaTunPI]; len(v) > 0 && v[0] == 0 {
		flags |= iffNoPI
	}
	if v := l.data[iflaTunVnetHdr]; len(v) > 0 && v[0] != 0 {
		flags |= iffVnetHdr
	}
	if v := l.data[iflaTunPersist]; len(v) > 0 && v[0] != 0 {
		flags |= iffPersist
	}
	if v := l.data[iflaTunMultiQueue]; len(v) > 0 && v[0] != 0 {
		flags |= iffMultiQueue
	}
	owner, group := int32(-1), int32(-1)
	if v, ok := l.data[iflaTunOwner]; ok {
		owner = int32(u32(v))
	}
	if v, ok := l.data[iflaTunGroup]; ok {
		group = int32(u32(v))
	}
	vnethdr, sndbuf := tunQueueParams(l.name, flags)
	return &tun.TunLinkEntry{Flags: proto.Uint32(flags), Owner: proto.Int32(owner), Group: proto.Int32(group),
		Vnethdr: proto.Uint32(vnethdr), Sndbuf: proto.Uint32(sndbuf)}
}

// tunQueueParams reads a tun device's vnet header size and send buffer
// by attaching to it; a device some process holds open keeps the
// defaults (criu reads them from that process's file).
func tunQueueParams(name string, flags uint32) (vnethdr, sndbuf uint32) {
	vnethdr, sndbuf = 10, 0x7fffffff
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer f.Close()
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return
	}
	ifr.SetUint16(uint16(flags & (iffTun | iffTap | iffNoPI | iffVnetHdr | iffMultiQueue)))
	if unix.IoctlIfreq(int(f.Fd()), unix.TUNSETIFF, ifr) != nil {
		return
	}
	if v, err := unix.IoctlGetInt(int(f.Fd()), unix.TUNGETVNETHDRSZ); err == nil {
		vnethdr = uint32(v)
	}
	if v, err := unix.IoctlGetInt(int(f.Fd()), unix.TUNGETSNDBUF); err == nil {
		sndbuf = uint32(v)
	}
	return
}
