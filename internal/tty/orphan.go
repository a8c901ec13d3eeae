package tty

import (
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/tty"

	"github.com/stasis-cr/stasis/internal/files"
)

// Orphan pts masters (criu's orphan_pts_master, an RPC option). A
// container run with a terminal has a pty slave as its stdio, whose
// master the runtime (runc --console-socket, conmon) holds outside the
// container: the dump takes the slave alone, as with -j. The restore
// cannot give it the old master, which stays with the runtime of the
// dead container: it makes a new pair of the same index (in the
// container's devpts instance when --root is given), gives the tree the
// slave, and hands the master to the caller (over RPC, the
// "orphan-pts-master" notification with the fd in SCM_RIGHTS), who
// passes it on to whoever serves the console.

// orphanSlave opens the slave of a pty whose master was outside the
// tree, on a new pair whose master goes to the caller.
func orphanSlave(r *files.Restorer, s *ttyRestore, info *tty.TtyInfoEntry, flags uint32) (*os.File, error) {
	p, err := orphanPair(r, s, int(info.GetPty().GetIndex()))
	if err != nil {
		return nil, err
	}
	return p.openSlave(flags)
}

// orphanPair makes the pair of index and hands its master out, once.
func orphanPair(r *files.Restorer, s *ttyRestore, index int) (*ptyPair, error) {
	p, err := pairOf(r, s, index)
	if err != nil {
		return nil, err
	}
	if p.orphanSent {
		return p, nil
	}
	if err := r.Opts.OrphanPtsMaster(p.master); err != nil {
		return nil, fmt.Errorf("hand the new master of /dev/pts/%d to the caller (orphan-pts-master): %w", index, err)
	}
	p.orphanSent = true
	r.Log().Info("orphan pts master handed to the caller", "index", index)
	return p, nil
}
