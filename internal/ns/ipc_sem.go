package ns

import (
	"encoding/binary"
	"fmt"
	"os"

	ipc_sem "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-sem"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
)

// System V semaphores: one ipcns-sem entry per set, its values (u16 each,
// padded to 8 bytes) as the entry's extra data. SEM_UNDO adjustments of
// the tasks are not kept (criu does not either).

const semNsemsOff = permSize + 32 // sem_nsems in struct semid64_ds

func dumpSem(dir *images.Dir, nsID uint32) error {
	w, err := dir.NewWriter(ipcFile("sem", nsID))
	if err != nil {
		return err
	}
	defer w.Close()
	err = statAll("sem", func() (int, error) {
		return semctl(0, 0, semInfo, make([]byte, dsSize))
	}, func(idx int, b []byte) (int, error) {
		return semctl(idx, 0, semStatAny, b)
	}, func(id int, b []byte) error {
		n := int(binary.NativeEndian.Uint64(b[semNsemsOff:]))
		vals, err := semGetAll(id, n)
		if err != nil {
			return fmt.Errorf("sem id %d: %w", id, os.NewSyscallError("semctl(GETALL)", err))
		}
		if err := w.Write(&ipc_sem.IpcSemEntry{Desc: desc(b, id), Nsems: proto.Uint32(uint32(n))}); err != nil {
			return err
		}
		extra := make([]byte, (2*n+7)&^7)
		for i, v := range vals {
			binary.LittleEndian.PutUint16(extra[2*i:], v)
		}
		return w.WriteExtra(extra)
	})
	if err != nil {
		return err
	}
	return w.Close()
}

type semImage struct {
	e    *ipc_sem.IpcSemEntry
	vals []uint16
}

func readSem(dir *images.Dir, nsID uint32) ([]semImage, error) {
	var out []semImage
	err := readIPCImage(dir, "sem", nsID, func() *ipc_sem.IpcSemEntry { return &ipc_sem.IpcSemEntry{} }, func(e *ipc_sem.IpcSemEntry) bool { return true },
		func(e *ipc_sem.IpcSemEntry, extra []byte) error {
			v, err := images.SemValues(e, extra)
			if err != nil {
				return fmt.Errorf("sem id %d: %w", e.GetDesc().GetId(), err)
			}
			out = append(out, semImage{e: e, vals: v})
			return nil
		})
	return out, err
}

func (s semImage) restore() error {
	d := s.e.GetDesc()
	if err := createWithID("sem", d, func(flags int) (int, error) {
		return semget(int32(d.GetKey()), int(s.e.GetNsems()), flags)
	}); err != nil {
		return err
	}
	id := int(d.GetId())
	if err := semSetAll(id, s.vals); err != nil {
		return fmt.Errorf("sem id %d: %w", id, os.NewSyscallError("semctl(SETALL)", err))
	}
	b := make([]byte, dsSize)
	setPerm(b, d)
	if _, err := semctl(id, 0, ipcSet, b); err != nil {
		return fmt.Errorf("sem id %d: %w", id, os.NewSyscallError("semctl(IPC_SET)", err))
	}
	return nil
}
