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

// sharedObjs are the kernel objects a process may not share with another
// (see dumpIDs), each kept as a kcmp-ordered set of the processes seen.
var sharedObjs = []struct {
	typ  int
	name string
}{{linux.KcmpVM, "memory"}, {linux.KcmpFiles, "fd table"}, {linux.KcmpFS, "fs info"}, {linux.KcmpSighand, "signal handlers"}}

// dumpIDs numbers the kernel objects of p. Processes of a tree normally
// each have their own; ones shared between processes (clone without
// CLONE_THREAD but with CLONE_VM, CLONE_FILES, CLONE_FS or
// CLONE_SIGHAND, as vfork does for a moment) are refused.
func (d *dumper) dumpIDs(p *process) error {
	if d.kobjs == nil {
		d.kobjs = make([]linux.KcmpSet[int], len(sharedObjs))
		for i, k := range sharedObjs {
			d.kobjs[i].Type = k.typ
		}
	}
	shares, err := sharesParentFiles(p)
	if err != nil {
		return err
	}
	sharesFS, err := sharesParentFS(p)
	if err != nil {
		return err
	}
	for i, k := range sharedObjs {
		if shares && k.typ == linux.KcmpFiles {
			p.sharesFiles = true // its parent's (sharedfdt.go)
			continue
		}
		if sharesFS && k.typ == linux.KcmpFS {
			continue // its parent's (sharedfs.go)
		}
		other, at, found, err := d.kobjs[i].Find(p.pid, 0)
		if err != nil {
			return fmt.Errorf("compare the %s of pid %d with the other processes': %w", k.name, p.pid, err)
		}
		if found {
			if err := d.files.Refuse(fmt.Errorf("pid %d shares its %s with pid %d (clone without CLONE_THREAD, or vfork in progress): %w", p.pid, k.name, other, ErrNotSupported)); err != nil {
				return err
			}
			continue
		}
		d.kobjs[i].Insert(at, p.pid, 0, p.pid)
	}
	u := func(kind string) *uint32 { return proto.Uint32(uint32(d.ids.next(kind))) }
	root := uint32(rootObjID)
	p.ids = &criucore.TaskKobjIdsEntry{
		VmId: u("vm"), FilesId: u("files"), FsId: u("fs"), SighandId: u("sighand"),
		PidNsId: &root, NetNsId: &root, IpcNsId: &root, UtsNsId: &root,
		MntNsId: &root, UserNsId: &root, CgroupNsId: &root, TimeNsId: &root,
	}
	if p.sharesFiles {
		p.ids.FilesId = proto.Uint32(p.parent.ids.GetFilesId())
	}
	if sharesFS {
		p.ids.FsId = proto.Uint32(p.parent.ids.GetFsId())
	}
	d.ns.SetIDs(p.pid, p.ids)
	return nil
}
