package dump

import (
	"fmt"

	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/linux"
)

// idAlloc numbers kernel objects of each kind from 1, as criu does.
type idAlloc map[string]int

func (a *idAlloc) next(kind string) int {
	if *a == nil {
		*a = idAlloc{}
	}
	(*a)[kind]++
	return (*a)[kind]
}

// dumpIDs numbers the kernel objects of p. Processes of a tree normally
// each have their own; ones shared between processes (clone without
// CLONE_THREAD but with CLONE_VM, CLONE_FILES, CLONE_FS or
// CLONE_SIGHAND, as vfork does for a moment) are refused.
func (d *dumper) dumpIDs(p *process) error {
	for _, other := range d.all {
		if other == p {
			break
		}
		if other.zombie {
			continue
		}
		for _, k := range []struct {
			typ  int
			name string
		}{{linux.KcmpVM, "memory"}, {linux.KcmpFiles, "fd table"}, {linux.KcmpFS, "fs info"}, {linux.KcmpSighand, "signal handlers"}} {
			same, err := linux.Kcmp(p.pid, other.pid, k.typ, 0, 0)
			if err != nil {
				return fmt.Errorf("compare pid %d with pid %d: %w", p.pid, other.pid, err)
			}
			if same {
				return fmt.Errorf("pid %d shares its %s with pid %d (clone without CLONE_THREAD, or vfork in progress): %w", p.pid, k.name, other.pid, ErrNotSupported)
			}
		}
	}
	u := func(kind string) *uint32 { return proto.Uint32(uint32(d.ids.next(kind))) }
	root := uint32(rootObjID)
	p.ids = &criucore.TaskKobjIdsEntry{
		VmId: u("vm"), FilesId: u("files"), FsId: u("fs"), SighandId: u("sighand"),
		PidNsId: &root, NetNsId: &root, IpcNsId: &root, UtsNsId: &root,
		MntNsId: &root, UserNsId: &root, CgroupNsId: &root, TimeNsId: &root,
	}
	return nil
}
