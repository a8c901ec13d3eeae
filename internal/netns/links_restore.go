package netns

import (
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/netdev"
	"golang.org/x/sys/unix"
)

// vethOut is where a veth's peer outside the tree goes: its name in
// stasis' network namespace and the bridge it joins there ("" none).
type vethOut struct {
	name, bridge string
}

// insidePeer tells whether the peer of a veth is in its own namespace
// (then the pair is made once, from the entry of lower index).
func insidePeer(e *netdev.NetDeviceEntry, ns uint32) bool {
	return e.PeerNsid != nil && e.GetPeerNsid() == ns
}

// createLinks makes the links of the images in the calling thread's
// namespace, every one with its index, name, mtu and address, down:
// flags and masters come once all exist (setLinks). tun devices,
// which no netlink request creates, come last: the kernel gives a new
// device the lowest free index, which is theirs when the images have
// no holes.
func createLinks(nl *rtnl, links []*netdev.NetDeviceEntry, ns uint32, outs map[string]vethOut, host *os.File) error {
	byIndex := map[uint32]*netdev.NetDeviceEntry{}
	for _, e := range links {
		byIndex[e.GetIfindex()] = e
	}
	done := map[uint32]bool{}
	order := slices.Clone(links)
	slices.SortStableFunc(order, func(a, b *netdev.NetDeviceEntry) int {
		ta, tb := a.GetType() == netdev.NdType_TUN, b.GetType() == netdev.NdType_TUN
		switch {
		case ta && !tb:
			return 1
		case tb && !ta:
			return -1
		}
		return int(a.GetIfindex()) - int(b.GetIfindex())
	})
	for _, e := range order {
		if done[e.GetIfindex()] {
			continue
		}
		var err error
		switch e.GetType() {
		case netdev.NdType_LOOPBACK:
			err = nil // every namespace has its own
		case netdev.NdType_VETH:
			err = createVeth(nl, e, byIndex, ns, outs, host, done)
		case netdev.NdType_BRIDGE:
			err = newLink(nl, e, "bridge", nil, nil)
		case netdev.NdType_MACVLAN:
			err = newLink(nl, e, "macvlan", func(a *nlattrs) {
				a.u32(iflaMacvlanMode, e.GetMacvlan().GetMode())
				if e.GetMacvlan().Flags != nil {
					a.add(iflaMacvlanFlags, []byte{byte(e.GetMacvlan().GetFlags()), byte(e.GetMacvlan().GetFlags() >> 8)})
				}
			}, func(a *nlattrs) { a.u32(unix.IFLA_LINK, e.GetPeerIfindex()) })
		case netdev.NdType_TUN:
			err = createTun(nl, e)
		default:
			err = fmt.Errorf("%s links are %w", e.GetType(), ErrNotSupported)
		}
		if err != nil {
			return fmt.Errorf("restore link %s (index %d): %w", e.GetName(), e.GetIfindex(), err)
		}
		done[e.GetIfindex()] = true
	}
	return nil
}

// newLink creates a link of kind with the entry's index, name, mtu and
// address; data fills IFLA_INFO_DATA, more adds attributes.
func newLink(nl *rtnl, e *netdev.NetDeviceEntry, kind string, data, more func(*nlattrs)) error {
	var a nlattrs
	linkAttrs(&a, e)
	if more != nil {
		more(&a)
	}
	a.nest(unix.IFLA_LINKINFO, func(li *nlattrs) {
		li.str(unix.IFLA_INFO_KIND, kind)
		if data != nil {
			li.nest(unix.IFLA_INFO_DATA, data)
		}
	})
	return nl.request(linkMsg(ifinfomsg(int32(e.GetIfindex()), 0, 0), &a), unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL)
}

func linkAttrs(a *nlattrs, e *netdev.NetDeviceEntry) {
	a.str(unix.IFLA_IFNAME, e.GetName())
	if e.GetMtu() != 0 {
		a.u32(unix.IFLA_MTU, e.GetMtu())
	}
	if len(e.Address) > 0 {
		a.add(unix.IFLA_ADDRESS, e.Address)
	}
}

// createVeth makes a veth pair: both ends here when the peer is in the
// tree's namespace, else the peer in stasis' namespace under the name
// the user gave, joined to its bridge.
func createVeth(nl *rtnl, e *netdev.NetDeviceEntry, byIndex map[uint32]*netdev.NetDeviceEntry, ns uint32, outs map[string]vethOut, host *os.File, done map[uint32]bool) error {
	if insidePeer(e, ns) {
		p := byIndex[e.GetPeerIfindex()]
		if p == nil {
			return fmt.Errorf("its peer, index %d, is not in the image: %w", e.GetPeerIfindex(), ErrBadImage)
		}
		err := newLink(nl, e, "veth", func(d *nlattrs) {
			d.add(vethInfoPeer, append(ifinfomsg(int32(p.GetIfindex()), 0, 0), peerAttrs(p)...))
		}, nil)
		done[p.GetIfindex()] = true
		return err
	}
	out, ok := outs[e.GetName()]
	if !ok {
		return fmt.Errorf("its peer is outside the tree: %w: --veth-pair %s=NAME or --external veth[%s]:NAME", ErrMissingKey, e.GetName(), e.GetName())
	}
	err := newLink(nl, e, "veth", func(d *nlattrs) {
		var pa nlattrs
		pa.str(unix.IFLA_IFNAME, out.name)
		pa.u32(unix.IFLA_NET_NS_FD, uint32(host.Fd()))
		d.add(vethInfoPeer, append(ifinfomsg(0, 0, 0), pa.b...))
	}, nil)
	if errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("its outside end %s: a link of that name exists: %w", out.name, err)
	}
	return err
}

func peerAttrs(p *netdev.NetDeviceEntry) []byte {
	var a nlattrs
	linkAttrs(&a, p)
	return a.b
}

// createTun makes a persistent tun or tap device as `ip tuntap add`
// does, through /dev/net/tun of the calling thread's namespace.
func createTun(nl *rtnl, e *netdev.NetDeviceEntry) error {
	t := e.GetTun()
	if t == nil {
		return fmt.Errorf("no tun parameters: %w", ErrBadImage)
	}
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fd := int(f.Fd())
	ifr, err := unix.NewIfreq(e.GetName())
	if err != nil {
		return err
	}
	ifr.SetUint16(uint16(t.GetFlags() & (iffTun | iffTap | iffNoPI | iffVnetHdr | iffMultiQueue)))
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return os.NewSyscallError("TUNSETIFF", err)
	}
	calls := []struct {
		name string
		req  uint
		val  int
		skip bool
	}{
		{"TUNSETOWNER", unix.TUNSETOWNER, int(t.GetOwner()), t.GetOwner() < 0},
		{"TUNSETGROUP", unix.TUNSETGROUP, int(t.GetGroup()), t.GetGroup() < 0},
		{"TUNSETPERSIST", unix.TUNSETPERSIST, 1, t.GetFlags()&iffPersist == 0},
	}
	for _, c := range calls {
		if c.skip {
			continue
		}
		if err := unix.IoctlSetInt(fd, c.req, c.val); err != nil {
			return os.NewSyscallError(c.name, err)
		}
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, int(t.GetVnethdr())); err != nil {
		return os.NewSyscallError("TUNSETVNETHDRSZ", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETSNDBUF, int(t.GetSndbuf())); err != nil {
		return os.NewSyscallError("TUNSETSNDBUF", err)
	}
	links, err := listLinks(nl)
	if err != nil {
		return err
	}
	for _, l := range links {
		if l.name == e.GetName() && l.index != int32(e.GetIfindex()) {
			return fmt.Errorf("the kernel gave it index %d, the images have %d (their indexes have a hole): %w", l.index, e.GetIfindex(), ErrNotSupported)
		}
	}
	// mtu and address, which TUNSETIFF does not take.
	var a nlattrs
	if e.GetMtu() != 0 {
		a.u32(unix.IFLA_MTU, e.GetMtu())
	}
	if len(e.Address) > 0 {
		a.add(unix.IFLA_ADDRESS, e.Address)
	}
	return nl.request(linkMsg(ifinfomsg(int32(e.GetIfindex()), 0, 0), &a), unix.RTM_NEWLINK, 0)
}

// linkFlags are the flags of a link the restore sets (the others are
// the kernel's: running, lower up, ...).
const linkFlags = unix.IFF_UP | unix.IFF_NOARP | unix.IFF_ALLMULTI | unix.IFF_MULTICAST | unix.IFF_DEBUG | unix.IFF_DYNAMIC

// setLinks gives every link its master (a bridge of the namespace), its
// loopback mtu, then its flags: up last.
func setLinks(nl *rtnl, links []*netdev.NetDeviceEntry) error {
	for _, e := range links {
		var a nlattrs
		if e.GetMaster() != 0 {
			a.u32(unix.IFLA_MASTER, e.GetMaster())
		}
		if e.GetType() == netdev.NdType_LOOPBACK && e.GetMtu() != 0 {
			a.u32(unix.IFLA_MTU, e.GetMtu())
		}
		if len(a.b) == 0 {
			continue
		}
		if err := nl.request(linkMsg(ifinfomsg(int32(e.GetIfindex()), 0, 0), &a), unix.RTM_NEWLINK, 0); err != nil {
			return fmt.Errorf("restore link %s (index %d): master %d: %w", e.GetName(), e.GetIfindex(), e.GetMaster(), err)
		}
	}
	for _, e := range links {
		var a nlattrs
		if err := nl.request(linkMsg(ifinfomsg(int32(e.GetIfindex()), e.GetFlags()&linkFlags, linkFlags), &a), unix.RTM_NEWLINK, 0); err != nil {
			return fmt.Errorf("restore link %s (index %d): flags %#x: %w", e.GetName(), e.GetIfindex(), e.GetFlags(), err)
		}
	}
	return nil
}

// setOutside enslaves the outside ends of veths to their bridge and
// brings them up, in the calling thread's namespace (stasis').
func setOutside(nl *rtnl, outs map[string]vethOut) error {
	links, err := listLinks(nl)
	if err != nil {
		return err
	}
	idx := map[string]int32{}
	for _, l := range links {
		idx[l.name] = l.index
	}
	for _, o := range outs {
		i, ok := idx[o.name]
		if !ok {
			continue // a veth the images do not have
		}
		var a nlattrs
		if o.bridge != "" {
			a.u32(unix.IFLA_MASTER, uint32(idx[o.bridge]))
		}
		if err := nl.request(linkMsg(ifinfomsg(i, unix.IFF_UP, unix.IFF_UP), &a), unix.RTM_NEWLINK, 0); err != nil {
			return fmt.Errorf("outside end %s of a veth (bridge %q): %w", o.name, o.bridge, err)
		}
	}
	return nil
}
