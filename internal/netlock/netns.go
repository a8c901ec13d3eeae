package netlock

import (
	"fmt"
	"os"

	"github.com/google/nftables"
)

// A tree with a network namespace of its own has its connections locked
// there: its packets never cross stasis' namespace. The lock holds that
// namespace open from SetNetNS on (so that it reaches it even once the
// process it came from is gone, a failed restore's root) and opens its
// netlink sockets there (nftables' WithNetNSFd).

// SetNetNS puts the lock in the network namespace of process pid, before
// any connection is locked; 0 is stasis' own.
func (l *Lock) SetNetNS(pid int) error {
	if l == nil || pid == 0 {
		return nil
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return fmt.Errorf("network lock: network namespace of pid %d: %w", pid, err)
	}
	if l.ns != nil {
		l.ns.Close()
	}
	l.ns = f
	return nil
}

// inNetNS returns the nftables options that open a connection in ns
// (none for nil: stasis').
func inNetNS(ns *os.File) []nftables.ConnOption {
	if ns == nil {
		return nil
	}
	return []nftables.ConnOption{nftables.WithNetNSFd(int(ns.Fd()))}
}

// closeNetNS lets the namespace go, once the lock is done with it.
func (l *Lock) closeNetNS() {
	if l.ns != nil {
		l.ns.Close()
		l.ns = nil
	}
}
