package ns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	ipc_desc "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-desc"
	ipc_var "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-var"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/linux"
)

// IPC namespace: its sysctls (ipcns-var-ID.img) and its System V objects,
// each kind in its file. Everything is read and made by stasis from a
// thread inside the namespace: /proc/sys/kernel/* and /proc/sys/fs/mqueue/*
// are the namespace's there, and System V ids are per namespace.

// System V commands (include/uapi/linux/{ipc,shm,sem,msg}.h).
const (
	ipcSet      = 1
	shmInfo     = 14
	shmStatAny  = 15
	semInfo     = 19
	semStatAny  = 20
	msgInfo     = 12
	msgStatAny  = 13
	shmDest     = 0o1000
	permSize    = 48 // struct ipc64_perm
	dsSize      = 128
	ipcNextNone = -1
)

func ipcFile(kind string, id uint32) string { return fmt.Sprintf("ipcns-%s-%d.img", kind, id) }

// readIPCImage reads ipcns-KIND-ID.img, if the dump has one: each entry, with
// the extra data that follows it when hasExtra says so, is handed to add;
// an error of add is one of a bad image, named with the file.
func readIPCImage[E proto.Message](dir *images.Dir, kind string, nsID uint32, newEntry func() E, hasExtra func(E) bool, add func(e E, extra []byte) error) error {
	name := ipcFile(kind, nsID)
	if !dir.Has(name) {
		return nil
	}
	r, err := dir.NewReader(name)
	if err != nil {
		return err
	}
	defer r.Close()
	for {
		e := newEntry()
		if err := r.Next(e); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		var extra []byte
		if hasExtra(e) {
			if extra, err = r.ReadExtra(); err != nil {
				return err
			}
		}
		if err := add(e, extra); err != nil {
			return fmt.Errorf("image %s: %w: %w", name, ErrBadImage, err)
		}
	}
}

// desc decodes the struct ipc64_perm at the start of a *id64_ds buffer.
func desc(b []byte, id int) *ipc_desc.IpcDescEntry {
	le := binary.NativeEndian
	u := func(off int) *uint32 { return proto.Uint32(le.Uint32(b[off:])) }
	return &ipc_desc.IpcDescEntry{
		Key: u(0), Uid: u(4), Gid: u(8), Cuid: u(12), Cgid: u(16),
		Mode: proto.Uint32(uint32(le.Uint16(b[20:]))), Id: proto.Uint32(uint32(id)),
	}
}

// setPerm fills the owner and mode of an IPC_SET buffer from d.
func setPerm(b []byte, d *ipc_desc.IpcDescEntry) {
	le := binary.NativeEndian
	le.PutUint32(b[4:], d.GetUid())
	le.PutUint32(b[8:], d.GetGid())
	le.PutUint16(b[20:], uint16(d.GetMode()&0o777))
}

// statAll calls stat(idx, buf) for every index up to what info says is
// the highest in use, and f for each object found (the STAT_ANY calls
// return its id).
func statAll(what string, info func() (int, error), stat func(idx int, b []byte) (int, error), f func(id int, b []byte) error) error {
	max, err := info()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	for idx := 0; idx <= max; idx++ {
		b := make([]byte, dsSize)
		id, err := stat(idx, b)
		if errors.Is(err, unix.EINVAL) {
			continue // a free index
		}
		if err != nil {
			return fmt.Errorf("%s index %d: %w", what, idx, err)
		}
		if err := f(id, b); err != nil {
			return err
		}
	}
	return nil
}

// ipcSysctl is one field of ipc_var_entry and its file.
type ipcSysctl struct {
	path string
	get  func(*ipc_var.IpcVarEntry) uint64
	set  func(*ipc_var.IpcVarEntry, uint64)
	opt  bool // optional in the entry: not written back when unset
}

var ipcSysctls = []ipcSysctl{
	{"kernel/msgmax", func(e *ipc_var.IpcVarEntry) uint64 { return uint64(e.GetMsgCtlmax()) }, func(e *ipc_var.IpcVarEntry, v uint64) { e.MsgCtlmax = proto.Uint32(uint32(v)) }, false},
	{"kernel/msgmnb", func(e *ipc_var.IpcVarEntry) uint64 { return uint64(e.GetMsgCtlmnb()) }, func(e *ipc_var.IpcVarEntry, v uint64) { e.MsgCtlmnb = proto.Uint32(uint32(v)) }, false},
	{"kernel/msgmni", func(e *ipc_var.IpcVarEntry) uint64 { return uint64(e.GetMsgCtlmni()) }, func(e *ipc_var.IpcVarEntry, v uint64) { e.MsgCtlmni = proto.Uint32(uint32(v)) }, false},
	{"kernel/shmmax", func(e *ipc_var.IpcVarEntry) uint64 { return e.GetShmCtlmax() }, func(e *ipc_var.IpcVarEntry, v uint64) { e.ShmCtlmax = proto.Uint64(v) }, false},
	{"kernel/shmall", func(e *ipc_var.IpcVarEntry) uint64 { return e.GetShmCtlall() }, func(e *ipc_var.IpcVarEntry, v uint64) { e.ShmCtlall = proto.Uint64(v) }, false},
	{"kernel/shmmni", func(e *ipc_var.IpcVarEntry) uint64 { return uint64(e.GetShmCtlmni()) }, func(e *ipc_var.IpcVarEntry, v uint64) { e.ShmCtlmni = proto.Uint32(uint32(v)) }, false},
	{"kernel/shm_rmid_forced", func(e *ipc_var.IpcVarEntry) uint64 { return uint64(e.GetShmRmidForced()) }, func(e *ipc_var.IpcVarEntry, v uint64) { e.ShmRmidForced = proto.Uint32(uint32(v)) }, false},
	{"fs/mqueue/queues_max", func(e *ipc_var.IpcVarEntry) uint64 { return uint64(e.GetMqQueuesMax()) }, func(e *ipc_var.IpcVarEntry, v uint64) { e.MqQueuesMax = proto.Uint32(uint32(v)) }, false},
	{"fs/mqueue/msg_max", func(e *ipc_var.IpcVarEntry) uint64 { return uint64(e.GetMqMsgMax()) }, func(e *ipc_var.IpcVarEntry, v uint64) { e.MqMsgMax = proto.Uint32(uint32(v)) }, false},
	{"fs/mqueue/msgsize_max", func(e *ipc_var.IpcVarEntry) uint64 { return uint64(e.GetMqMsgsizeMax()) }, func(e *ipc_var.IpcVarEntry, v uint64) { e.MqMsgsizeMax = proto.Uint32(uint32(v)) }, false},
	{"fs/mqueue/msg_default", func(e *ipc_var.IpcVarEntry) uint64 { return uint64(e.GetMqMsgDefault()) }, func(e *ipc_var.IpcVarEntry, v uint64) { e.MqMsgDefault = proto.Uint32(uint32(v)) }, true},
	{"fs/mqueue/msgsize_default", func(e *ipc_var.IpcVarEntry) uint64 { return uint64(e.GetMqMsgsizeDefault()) }, func(e *ipc_var.IpcVarEntry, v uint64) { e.MqMsgsizeDefault = proto.Uint32(uint32(v)) }, true},
}

func readSysctl(path string) (string, error) {
	b, err := os.ReadFile("/proc/sys/" + path)
	return strings.TrimSpace(string(b)), err
}

func writeSysctl(path, val string) error {
	return os.WriteFile("/proc/sys/"+path, []byte(val), 0)
}

// dumpIPCVar reads the namespace's sysctls (in its thread).
func dumpIPCVar() (*ipc_var.IpcVarEntry, error) {
	e := &ipc_var.IpcVarEntry{AutoMsgmni: proto.Uint32(0)}
	sem, err := readSysctl("kernel/sem")
	if err != nil {
		return nil, err
	}
	for _, f := range strings.Fields(sem) {
		v, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("kernel.sem %q: %w", sem, err)
		}
		e.SemCtls = append(e.SemCtls, uint32(v))
	}
	for _, s := range ipcSysctls {
		v, err := readSysctl(s.path)
		if err != nil {
			if s.opt && errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, err
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", s.path, v, err)
		}
		s.set(e, n)
	}
	// criu writes the next ids only when one is set (not -1).
	for _, n := range []struct {
		path string
		p    **uint32
	}{{"kernel/msg_next_id", &e.MsgNextId}, {"kernel/sem_next_id", &e.SemNextId}, {"kernel/shm_next_id", &e.ShmNextId}} {
		v, err := readSysctl(n.path)
		if err != nil {
			continue
		}
		if id, err := strconv.Atoi(v); err == nil && id >= 0 {
			*n.p = proto.Uint32(uint32(id))
		}
	}
	return e, nil
}

func restoreIPCVar(e *ipc_var.IpcVarEntry) error {
	if len(e.SemCtls) > 0 {
		var f []string
		for _, v := range e.SemCtls {
			f = append(f, strconv.FormatUint(uint64(v), 10))
		}
		if err := writeSysctl("kernel/sem", strings.Join(f, " ")); err != nil {
			return err
		}
	}
	for _, s := range ipcSysctls {
		if s.opt && s.get(e) == 0 {
			continue
		}
		if err := writeSysctl(s.path, strconv.FormatUint(s.get(e), 10)); err != nil {
			return err
		}
	}
	return nil
}

// restoreIPCNextIDs sets the next ids last: each object made before
// consumed the one set for it.
func restoreIPCNextIDs(e *ipc_var.IpcVarEntry) error {
	for _, n := range []struct {
		path string
		v    *uint32
	}{{"kernel/msg_next_id", e.MsgNextId}, {"kernel/sem_next_id", e.SemNextId}, {"kernel/shm_next_id", e.ShmNextId}} {
		if n.v != nil {
			if err := writeSysctl(n.path, strconv.FormatUint(uint64(*n.v), 10)); err != nil {
				return err
			}
		}
	}
	return nil
}

// dumpIPC writes the images of the ipc namespace of pid, whose id is id.
func dumpIPC(dir *images.Dir, pid int, id uint32, nextPages func() int) error {
	err := linux.InNamespace(pid, unix.CLONE_NEWIPC, func() error {
		v, err := dumpIPCVar()
		if err != nil {
			return fmt.Errorf("sysctls: %w", err)
		}
		if err := dumpShm(dir, id, nextPages); err != nil {
			return err
		}
		if err := dumpSem(dir, id); err != nil {
			return err
		}
		if err := dumpMsg(dir, id, v); err != nil {
			return err
		}
		return dir.Write(ipcFile("var", id), v)
	})
	if err != nil {
		return fmt.Errorf("ipc namespace of pid %d: %w", pid, err)
	}
	return nil
}

// ipcImages is an ipc namespace as the images have it.
type ipcImages struct {
	id  uint32
	v   *ipc_var.IpcVarEntry
	shm []shmImage
	sem []semImage
	msg []msgImage
}

func readIPC(dir *images.Dir, id uint32) (*ipcImages, error) {
	m := &ipcImages{id: id, v: &ipc_var.IpcVarEntry{}}
	if err := dir.ReadOne(ipcFile("var", id), m.v); err != nil {
		return nil, err
	}
	var err error
	if m.shm, err = readShm(dir, id); err != nil {
		return nil, err
	}
	if m.sem, err = readSem(dir, id); err != nil {
		return nil, err
	}
	if m.msg, err = readMsg(dir, id); err != nil {
		return nil, err
	}
	return m, nil
}

// restore fills the new ipc namespace of pid: sysctls first (the limits
// the objects were made under), then each object with its id.
func (m *ipcImages) restore(dir *images.Dir, pid int) error {
	err := linux.InNamespace(pid, unix.CLONE_NEWIPC, func() error {
		if err := asNSRoot(pid, func() error { return restoreIPCVar(m.v) }); err != nil {
			return fmt.Errorf("%s: %w", ipcFile("var", m.id), err)
		}
		for _, s := range m.shm {
			if err := s.restore(dir); err != nil {
				return fmt.Errorf("%s: %w", ipcFile("shm", m.id), err)
			}
		}
		for _, s := range m.sem {
			if err := s.restore(); err != nil {
				return fmt.Errorf("%s: %w", ipcFile("sem", m.id), err)
			}
		}
		for _, q := range m.msg {
			if err := q.restore(); err != nil {
				return fmt.Errorf("%s: %w", ipcFile("msg", m.id), err)
			}
		}
		return restoreIPCNextIDs(m.v)
	})
	if err != nil {
		return fmt.Errorf("restore the ipc namespace in pid %d: %w", pid, err)
	}
	return nil
}

// createWithID sets the namespace's next id of kind ("shm", "sem",
// "msg") to id and creates the object with get, which must return it.
func createWithID(kind string, d *ipc_desc.IpcDescEntry, get func(flags int) (int, error)) error {
	if err := writeSysctl("kernel/"+kind+"_next_id", strconv.FormatUint(uint64(d.GetId()), 10)); err != nil {
		return err
	}
	got, err := get(int(d.GetMode()&0o777) | unix.IPC_CREAT | unix.IPC_EXCL)
	if err != nil {
		return fmt.Errorf("create %s id %d key %#x: %w", kind, d.GetId(), d.GetKey(), os.NewSyscallError(kind+"get", err))
	}
	if got != int(d.GetId()) {
		return fmt.Errorf("create %s id %d key %#x: got id %d", kind, d.GetId(), d.GetKey(), got)
	}
	return nil
}
