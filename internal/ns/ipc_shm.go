package ns

import (
	"fmt"
	"os"

	ipc_desc "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-desc"
	ipc_shm "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-shm"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/mem"
)

// System V shared memory: one ipcns-shm entry per segment; its contents
// in pagemap-shmem-ID.img and a pages image (in_pagemaps, as criu 4
// writes them; older images carry them as the entry's extra data). The
// attachments of the tasks are their VMAs (internal/mem), made again
// once the segment exists here.

func dumpShm(dir *images.Dir, nsID uint32, nextPages func() int) error {
	w, err := dir.NewWriter(ipcFile("shm", nsID))
	if err != nil {
		return err
	}
	defer w.Close()
	err = statAll("shm", func() (int, error) {
		var ds unix.SysvShmDesc
		return unix.SysvShmCtl(0, shmInfo, &ds)
	}, func(idx int, b []byte) (int, error) {
		var ds unix.SysvShmDesc
		id, err := unix.SysvShmCtl(idx, shmStatAny, &ds)
		return id, err
	}, func(id int, _ []byte) error {
		var ds unix.SysvShmDesc
		if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &ds); err != nil {
			return fmt.Errorf("shm id %d: %w", id, os.NewSyscallError("shmctl(IPC_STAT)", err))
		}
		if ds.Perm.Mode&shmDest != 0 {
			return fmt.Errorf("shm id %d is marked for removal (IPC_RMID) and goes with its last detach: %w", id, ErrNotSupported)
		}
		d := &ipc_desc.IpcDescEntry{
			Key: proto.Uint32(uint32(ds.Perm.Key)), Uid: proto.Uint32(ds.Perm.Uid), Gid: proto.Uint32(ds.Perm.Gid),
			Cuid: proto.Uint32(ds.Perm.Cuid), Cgid: proto.Uint32(ds.Perm.Cgid), Mode: proto.Uint32(uint32(ds.Perm.Mode)),
			Id: proto.Uint32(uint32(id)),
		}
		if err := w.Write(&ipc_shm.IpcShmEntry{Desc: d, Size: proto.Uint64(ds.Segsz), InPagemaps: proto.Bool(true)}); err != nil {
			return err
		}
		return dumpShmPages(dir, id, int64(ds.Segsz), nextPages())
	})
	if err != nil {
		return err
	}
	return w.Close()
}

// dumpShmPages writes the data of segment id, attached read-only to stasis
// for the time of it (the segment's file is its map_files entry).
func dumpShmPages(dir *images.Dir, id int, size int64, pagesID int) error {
	b, addr, err := shmAt(id, unix.SHM_RDONLY)
	if err != nil {
		return fmt.Errorf("shm id %d: %w", id, os.NewSyscallError("shmat", err))
	}
	defer unix.SysvShmDetach(b)
	end := addr + uintptr((size+mem.PageSize-1)&^(mem.PageSize-1))
	f, err := os.Open(fmt.Sprintf("/proc/self/map_files/%x-%x", addr, end))
	if err != nil {
		return fmt.Errorf("shm id %d: %w", id, err)
	}
	defer f.Close()
	if err := mem.DumpShmem(dir, f, size, uint64(id), pagesID); err != nil {
		return fmt.Errorf("shm id %d: %w", id, err)
	}
	return nil
}

type shmImage struct {
	e     *ipc_shm.IpcShmEntry
	extra []byte // the contents, in images without in_pagemaps
}

func readShm(dir *images.Dir, nsID uint32) ([]shmImage, error) {
	var out []shmImage
	// The contents follow an entry only in images without in_pagemaps.
	err := readIPCImage(dir, "shm", nsID, func() *ipc_shm.IpcShmEntry { return &ipc_shm.IpcShmEntry{} }, func(e *ipc_shm.IpcShmEntry) bool { return !e.GetInPagemaps() },
		func(e *ipc_shm.IpcShmEntry, extra []byte) error {
			if e.GetSize() == 0 || e.GetSize() > 1<<40 {
				return fmt.Errorf("shm id %d of %d bytes", e.GetDesc().GetId(), e.GetSize())
			}
			out = append(out, shmImage{e: e, extra: extra})
			return nil
		})
	return out, err
}

// sliceWriter writes into attached memory.
type sliceWriter []byte

func (s sliceWriter) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(s)) {
		return 0, fmt.Errorf("write of %d bytes at %d past the segment's %d", len(p), off, len(s))
	}
	return copy(s[off:], p), nil
}

func (s shmImage) restore(dir *images.Dir) error {
	d := s.e.GetDesc()
	size := s.e.GetSize()
	if err := createWithID("shm", d, func(flags int) (int, error) {
		return unix.SysvShmGet(int(int32(d.GetKey())), int(size), flags)
	}); err != nil {
		return err
	}
	id := int(d.GetId())
	var ds unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &ds); err != nil {
		return fmt.Errorf("shm id %d: %w", id, os.NewSyscallError("shmctl(IPC_STAT)", err))
	}
	ds.Perm.Uid, ds.Perm.Gid, ds.Perm.Mode = d.GetUid(), d.GetGid(), d.GetMode()&0o777
	if _, err := unix.SysvShmCtl(id, ipcSet, &ds); err != nil {
		return fmt.Errorf("shm id %d: %w", id, os.NewSyscallError("shmctl(IPC_SET)", err))
	}
	b, _, err := shmAt(id, 0)
	if err != nil {
		return fmt.Errorf("shm id %d: %w", id, os.NewSyscallError("shmat", err))
	}
	defer unix.SysvShmDetach(b)
	if s.extra != nil {
		copy(b, s.extra)
		return nil
	}
	if err := mem.FillShmem(dir, uint64(id), int64(size), sliceWriter(b)); err != nil {
		return fmt.Errorf("shm id %d: %w", id, err)
	}
	return nil
}
