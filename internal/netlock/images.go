package netlock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net/netip"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
)

// ConnsOf reads the connections to lock from the entries of files.img:
// the TCP sockets (INETSK entries) that have a peer, by criu's fields
// family, proto, state, src_addr/src_port (the local end) and
// dst_addr/dst_port (the peer). A restore reads them there, so that it
// locks and unlocks the right ones on any host.
func ConnsOf(entries iter.Seq[*fdinfo.FileEntry]) ([]Conn, error) {
	var conns []Conn
	for fe := range entries {
		ie := fe.GetIsk()
		if fe.GetType() != fdinfo.FdTypes_INETSK || ie == nil || ie.GetProto() != unix.IPPROTO_TCP {
			continue
		}
		// The lock drops the packets of connections that are not
		// listening, not closed, not still connecting (a connect the
		// restore starts again has nothing to keep).
		if st := ie.GetState(); st == linux.TCPClose || st == linux.TCPListen || st == linux.TCPSynSent || ie.GetDstPort() == 0 {
			continue
		}
		local, err := addrPort(ie.GetFamily(), ie.GetSrcAddr(), ie.GetSrcPort())
		if err != nil {
			return nil, fmt.Errorf("files.img: inet socket id %d: local address: %w", fe.GetId(), err)
		}
		remote, err := addrPort(ie.GetFamily(), ie.GetDstAddr(), ie.GetDstPort())
		if err != nil {
			return nil, fmt.Errorf("files.img: inet socket id %d: peer address: %w", fe.GetId(), err)
		}
		conns = append(conns, Conn{Local: local, Remote: remote})
	}
	return conns, nil
}

// addrPort decodes criu's address words: the bytes of the address in
// network order, read as host-order (little-endian) u32s.
func addrPort(family uint32, words []uint32, port uint32) (netip.AddrPort, error) {
	n := map[uint32]int{unix.AF_INET: 1, unix.AF_INET6: 4}[family]
	if n == 0 {
		return netip.AddrPort{}, fmt.Errorf("family %d is not inet", family)
	}
	if len(words) != n || port > 0xffff {
		return netip.AddrPort{}, fmt.Errorf("%d address words and port %d for family %d: corrupt entry", len(words), port, family)
	}
	b := make([]byte, 0, 16)
	for _, w := range words {
		b = binary.LittleEndian.AppendUint32(b, w)
	}
	a, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(a, uint16(port)), nil
}

// ForRestore locks, for the duration of a restore, the connections of
// the images of the tree whose root had pid: on another host, nothing
// drops their packets before this lock. Unlock removes it with the
// dump's persistent one.
//
// runID is the dump's run id if it was locked with nftables (inventory
// network_lock_method 1), by stasis or criu: its persistent lock is
// CRIUTableName(runID); images of stasis before that have stasis-PID.
//
// nsPid is the process in whose network namespace the tree's sockets are
// (the restored root, once it made its own), 0 for stasis'.
func ForRestore(mode Mode, pid int, runID string, entries iter.Seq[*fdinfo.FileEntry], nsPid int, log *slog.Logger) (*Lock, error) {
	l := New(mode, pid, log)
	if l == nil {
		return nil, nil
	}
	l.SetNetNS(nsPid)
	if runID != "" {
		l.foreign = append(l.foreign, CRIUTableName(runID))
	}
	conns, err := ConnsOf(entries)
	if err != nil {
		return nil, err
	}
	for _, c := range conns {
		if err := l.Add(c); err != nil {
			return nil, errors.Join(err, l.Release())
		}
	}
	return l, nil
}

// Unlock ends a restore's lock: this stasis' table and the persistent
// one of the dump. It runs once the restored sockets have left repair
// mode and the tasks run, or once the restore has failed and killed
// them (their peers get resets then, as they should).
func (l *Lock) Unlock() error {
	if l == nil || l.conns == nil {
		return nil
	}
	err := unlockTables(l.nsPid, append([]string{TableName(l.pid)}, l.foreign...)...)
	if err != nil {
		name := TableName(l.pid)
		if len(l.foreign) > 0 {
			name = l.foreign[0]
		}
		err = fmt.Errorf("%w; the connections of pid %d stay locked: remove the lock with `nft delete table inet %s`", err, l.pid, name)
	}
	return errors.Join(err, l.Release())
}
