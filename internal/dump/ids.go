package dump

import (
	"fmt"

	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
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

// kcmp types (include/uapi/linux/kcmp.h).
const (
	kcmpVM      = 1
	kcmpFiles   = 2
	kcmpFS      = 3
	kcmpSighand = 4
)

func kcmp(pid1, pid2, typ int) (bool, error) {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), uintptr(typ), 0, 0, 0)
	if e != 0 {
		return false, e
	}
	return r == 0, nil
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
		}{{kcmpVM, "memory"}, {kcmpFiles, "fd table"}, {kcmpFS, "fs info"}, {kcmpSighand, "signal handlers"}} {
			same, err := kcmp(p.pid, other.pid, k.typ)
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
