package netlock

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nftTableFOwner is NFT_TABLE_F_OWNER (include/uapi/linux/netfilter/
// nf_tables.h, Linux 5.12): the table belongs to the netlink socket that
// created it, which alone may change it, and dies with it.
const nftTableFOwner = 0x2

// lockPriority runs the chains after defragmentation (-400), before raw
// (-300), conntrack (-200) and every filter (0).
const lockPriority nftables.ChainPriority = -350

// SoccrMark is criu's SOCCR_MARK: packets that stasis itself sends to a
// locked connection (the peer's FIN replayed from a raw socket, see
// internal/sockets/tcpfin.go) carry it (SO_MARK) and pass the lock.
const SoccrMark = 0xC114

// nftReg32 is NFT_REG32_00, the first 32-bit register: a concatenated
// key is loaded into consecutive ones, each field padded to 4 bytes.
const nftReg32 = 8

// ruleset is one lock table: its sets and chains.
type ruleset struct {
	name   string
	table  *nftables.Table
	v4, v6 *nftables.Set
}

var (
	keyV4 = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService, nftables.TypeIPAddr, nftables.TypeInetService)
	keyV6 = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetService, nftables.TypeIP6Addr, nftables.TypeInetService)
)

func newRuleset(name string) *ruleset {
	t := &nftables.Table{Name: name, Family: nftables.TableFamilyINet}
	return &ruleset{
		name: name, table: t,
		v4: &nftables.Set{Table: t, Name: "conns4", KeyType: keyV4, Concatenation: true},
		v6: &nftables.Set{Table: t, Name: "conns6", KeyType: keyV6, Concatenation: true},
	}
}

// isLockTable tells the lock tables: stasis-PID-by-PID while a stasis
// runs, CRIU-RUNID (of stasis or criu) and stasis-PID (of earlier
// stasis) once persistent.
func isLockTable(name string) bool {
	return strings.HasPrefix(name, "stasis-") || strings.HasPrefix(name, "CRIU-")
}

// build queues the sets holding conns and the chains dropping their
// packets; the table exists or is queued before.
func (r *ruleset) build(nft *nftables.Conn, conns []Conn) error {
	var e4, e6 []nftables.SetElement
	for _, c := range conns {
		if key, v4 := connKey(c); v4 {
			e4 = append(e4, nftables.SetElement{Key: key})
		} else {
			e6 = append(e6, nftables.SetElement{Key: key})
		}
	}
	if err := nft.AddSet(r.v4, e4); err != nil {
		return err
	}
	if err := nft.AddSet(r.v6, e6); err != nil {
		return err
	}
	prio := lockPriority
	policy := nftables.ChainPolicyAccept
	// Incoming packets are matched with daddr/dport as the local end,
	// outgoing ones with saddr/sport: one key order for both.
	for _, ch := range []struct {
		name        string
		hook        *nftables.ChainHook
		local, peer int // 0: source fields, 1: destination fields
	}{
		{"prerouting", nftables.ChainHookPrerouting, 1, 0},
		{"output", nftables.ChainHookOutput, 0, 1},
	} {
		c := nft.AddChain(&nftables.Chain{Name: ch.name, Table: r.table, Type: nftables.ChainTypeFilter,
			Hooknum: ch.hook, Priority: &prio, Policy: &policy})
		nft.AddRule(&nftables.Rule{Table: r.table, Chain: c, Exprs: dropExprs(r.v4, unix.NFPROTO_IPV4, 12, 4, ch.local, ch.peer)})
		nft.AddRule(&nftables.Rule{Table: r.table, Chain: c, Exprs: dropExprs(r.v6, unix.NFPROTO_IPV6, 8, 16, ch.local, ch.peer)})
	}
	return nil
}

// dropExprs is "meta mark != SoccrMark meta nfproto F meta l4proto tcp LOCAL-ADDR . LOCAL-PORT
// . PEER-ADDR . PEER-PORT @set drop". The addresses of an IP header are
// the source at saddrOff and the destination right after it; the ports
// are the first two fields of the TCP header.
func dropExprs(set *nftables.Set, nfproto byte, saddrOff, alen uint32, local, peer int) []expr.Any {
	reg := uint32(nftReg32)
	var load []expr.Any
	for _, end := range []int{local, peer} {
		load = append(load,
			&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: saddrOff + uint32(end)*alen, Len: alen},
			&expr.Payload{DestRegister: reg + alen/4, Base: expr.PayloadBaseTransportHeader, Offset: uint32(end) * 2, Len: 2})
		reg += alen/4 + 1
	}
	return append(append([]expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, SoccrMark)},
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}, load...),
		&expr.Lookup{SourceRegister: nftReg32, SetName: set.Name, SetID: set.ID},
		&expr.Verdict{Kind: expr.VerdictDrop})
}

// connKey is the set key of c: each field in network order, padded to 4
// bytes. An IPv4-mapped IPv6 connection sends IPv4 packets.
func connKey(c Conn) (key []byte, v4 bool) {
	la, ra := c.Local.Addr().Unmap(), c.Remote.Addr().Unmap()
	v4 = la.Is4()
	for _, end := range []struct {
		a    []byte
		port uint16
	}{{la.AsSlice(), c.Local.Port()}, {ra.AsSlice(), c.Remote.Port()}} {
		key = append(key, end.a...)
		key = binary.BigEndian.AppendUint16(key, end.port)
		key = append(key, 0, 0)
	}
	return key, v4
}

// add locks one more connection of an existing table.
func (r *ruleset) add(nft *nftables.Conn, c Conn) error {
	if !c.Local.IsValid() || !c.Remote.IsValid() || c.Local.Addr().Unmap().Is4() != c.Remote.Addr().Unmap().Is4() {
		return fmt.Errorf("not a connection of one address family")
	}
	key, v4 := connKey(c)
	set := r.v6
	if v4 {
		set = r.v4
	}
	if err := nft.SetAddElements(set, []nftables.SetElement{{Key: key}}); err != nil {
		return err
	}
	return nft.Flush()
}

// replace queues the (re)creation of the table with conns: an existing
// one of that name is deleted in the same transaction (nft's "table x;
// delete table x; table x {...}").
func (r *ruleset) replace(nft *nftables.Conn, conns []Conn) error {
	nft.AddTable(r.table)
	nft.DelTable(r.table)
	nft.AddTable(r.table)
	return r.build(nft, conns)
}

// owner is a lasting nftables connection and its netlink socket.
type owner struct {
	nft *nftables.Conn
	nl  *netlink.Conn
}

func dialOwner(nsPid int) (*owner, error) {
	o := &owner{}
	opts, done, err := inNetNS(nsPid)
	if err != nil {
		return nil, err
	}
	defer done() // a lasting connection has its socket: the namespace is its own
	o.nft, err = nftables.New(append(opts, nftables.AsLasting(), nftables.WithSockOptions(func(c *netlink.Conn) error {
		o.nl = c
		return nil
	}))...)
	if err != nil {
		return nil, fmt.Errorf("open a netlink socket to nftables: %w", err)
	}
	return o, nil
}

// createOwnedTable creates the table owned by nl's socket; google/
// nftables cannot set table flags, so this one message is ours.
func createOwnedTable(nl *netlink.Conn, name string) error {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_TABLE_NAME, name)
	ae.Uint32(unix.NFTA_TABLE_FLAGS, 0)
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	// NFTA_TABLE_FLAGS is big-endian; the encoder writes native order.
	binary.BigEndian.PutUint32(attrs[len(attrs)-4:], nftTableFOwner)
	// struct nfgenmsg: family, version, res_id (big-endian): the batch
	// messages name the subsystem, the table message its family.
	batch := []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES}
	msgs := []netlink.Message{
		{Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_MSG_BATCH_BEGIN), Flags: netlink.Request}, Data: batch},
		{Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWTABLE),
			Flags: netlink.Request | netlink.Acknowledge | netlink.Create | netlink.Excl},
			Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...)},
		{Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_MSG_BATCH_END), Flags: netlink.Request}, Data: batch},
	}
	if _, err := nl.SendMessages(msgs); err != nil {
		return fmt.Errorf("create owned table: %w", err)
	}
	if _, err := nl.Receive(); err != nil {
		return fmt.Errorf("create owned table: %w", err)
	}
	return nil
}
