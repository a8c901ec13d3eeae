package netlock

import (
	"fmt"
	"os"

	"github.com/google/nftables"
)

// A tree with a network namespace of its own has its connections locked
// there: its packets never cross stasis' namespace. The lock's netlink
// sockets are opened in the namespace of the tree's root (nftables'
// WithNetNSFd), and keep it once open.

// SetNetNS puts the lock in the network namespace of process pid, before
// any connection is locked; 0 is stasis' own.
func (l *Lock) SetNetNS(pid int) {
	if l != nil {
		l.nsPid = pid
	}
}

// inNetNS returns the nftables options that open a connection in the
// network namespace of pid (none for 0) and what closes the namespace
// file once the connection's sockets are open.
func inNetNS(pid int) ([]nftables.ConnOption, func(), error) {
	if pid == 0 {
		return nil, func() {}, nil
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return nil, nil, fmt.Errorf("network namespace of pid %d: %w", pid, err)
	}
	return []nftables.ConnOption{nftables.WithNetNSFd(int(f.Fd()))}, func() { f.Close() }, nil
}
