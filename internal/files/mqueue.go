package files

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"

	ext_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ext-file"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fown"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/ns"
	"github.com/stasis-cr/stasis/internal/remote"
)

// An open POSIX message queue (mq_open). criu 4.2 has no kind for it (it
// takes the fd for a file on a mount it cannot find: "Can't lookup
// mount"); stasis writes it as criu's "external file" (EXT, which criu
// hands to a plugin and refuses without one), with its own fields as
// extensions of ext_file_entry that criu and crit skip:
//
//	optional string mq_name = 100;     // without its leading '/'
//	optional uint32 mq_flags = 101;    // open flags
//	optional uint32 mq_notify = 102;   // 1 + sigev_notify of a registration this fd's process holds
//	optional uint32 mq_signo = 103;    // its signal
//	optional bytes mq_queue = 104;     // the queue (stasis.mqueue_entry), when it is in stasis' own ipc namespace
//
// The queue of a tree's own ipc namespace is in mqueue-ID.img
// (internal/ns), made before any fd is opened; one of stasis' own
// namespace travels with the fd and is made again only if it is gone
// (it outlives the tree, as a file would).
const (
	fieldMqName   = 100
	fieldMqFlags  = 101
	fieldMqNotify = 102
	fieldMqSigno  = 103
	fieldMqQueue  = 104
)

const (
	mqueueMagic = 0x19800202 // MQUEUE_MAGIC, include/uapi/linux/magic.h
	sigevThread = 2          // SIGEV_THREAD, include/uapi/asm-generic/siginfo.h
)

func init() {
	Register(&Kind{Name: "mqueue", Type: fdinfo.FdTypes_EXT, Dump: dumpMqueue, Open: openMqueue})
}

// isMqueue tells a regular file of an mqueue file system.
func isMqueue(fd *Fd) bool {
	var s unix.Statfs_t
	return fd.Stat.Mode&unix.S_IFMT == unix.S_IFREG && unix.Statfs(fd.Path(), &s) == nil && s.Type == mqueueMagic
}

type mqFile struct {
	name          string
	flags         uint32
	notify, signo uint32
	queue         []byte
}

func dumpMqueue(t *Table, fd *Fd) (*fdinfo.FileEntry, error) {
	name, deleted := strings.CutSuffix(strings.TrimPrefix(fd.Target, "/"), deletedSuffix)
	if deleted {
		return nil, &UnsupportedError{Pid: fd.Pid, Fd: fd.Num, Kind: "mqueue", Target: fd.Target, Hint: "a POSIX message queue removed (mq_unlink) while open is not supported yet"}
	}
	m := mqFile{name: name, flags: fd.Flags()}
	n, err := ns.MQStatusIn(fd.Pid, name)
	if err != nil {
		return nil, fmt.Errorf("queue /%s: %w", name, err)
	}
	switch {
	case n.Pid == fd.Pid && n.Type == sigevThread:
		return nil, fmt.Errorf("queue /%s: a SIGEV_THREAD notification (glibc runs it through a netlink socket and a thread of its own) is %w", name, ErrUnsupported)
	case n.Pid == fd.Pid:
		m.notify, m.signo = uint32(n.Type)+1, uint32(n.Signo)
	case n.Pid != 0 && t.Tasks[n.Pid]:
		return nil, fmt.Errorf("queue /%s: its notification is registered by pid %d, which did not open this fd: %w", name, n.Pid, ErrUnsupported)
	}
	var self, own unix.Stat_t
	if unix.Stat("/proc/self/ns/ipc", &self) == nil && unix.Stat(fmt.Sprintf("/proc/%d/ns/ipc", fd.Pid), &own) == nil && self.Ino == own.Ino {
		q, err := ns.ReadMQueueIn(fd.Pid, name)
		if err != nil {
			return nil, err
		}
		if m.queue, err = (proto.MarshalOptions{Deterministic: true}).Marshal(q.Entry()); err != nil {
			return nil, err
		}
	}
	e := &ext_file.ExtFileEntry{Id: proto.Uint32(fd.ID), Fown: &fown.FownEntry{
		Uid: proto.Uint32(0), Euid: proto.Uint32(0), Signum: proto.Uint32(0), PidType: proto.Uint32(0), Pid: proto.Uint32(0),
	}}
	b := protowire.AppendTag(nil, fieldMqName, protowire.BytesType)
	b = protowire.AppendString(b, m.name)
	for _, v := range []struct {
		n protowire.Number
		v uint32
	}{{fieldMqFlags, m.flags}, {fieldMqNotify, m.notify}, {fieldMqSigno, m.signo}} {
		b = protowire.AppendTag(b, v.n, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(v.v))
	}
	if m.queue != nil {
		b = protowire.AppendTag(b, fieldMqQueue, protowire.BytesType)
		b = protowire.AppendBytes(b, m.queue)
	}
	e.ProtoReflect().SetUnknown(b)
	return &fdinfo.FileEntry{Type: fdinfo.FdTypes_EXT.Enum(), Id: proto.Uint32(fd.ID), Ext: e}, nil
}

// mqOf reads the mqueue fields of an EXT entry; ok is false for an
// entry that is not stasis' mqueue (a plugin's file of criu).
func mqOf(fe *fdinfo.FileEntry) (m mqFile, ok bool, err error) {
	if fe.GetType() != fdinfo.FdTypes_EXT || fe.GetExt() == nil {
		return m, false, nil
	}
	b := fe.GetExt().ProtoReflect().GetUnknown()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return m, false, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == fieldMqName && typ == protowire.BytesType:
			v, k := protowire.ConsumeString(b)
			m.name, n, ok = v, k, true
		case num == fieldMqQueue && typ == protowire.BytesType:
			v, k := protowire.ConsumeBytes(b)
			m.queue, n = v, k
		case typ == protowire.VarintType && (num == fieldMqFlags || num == fieldMqNotify || num == fieldMqSigno):
			v, k := protowire.ConsumeVarint(b)
			n = k
			switch num {
			case fieldMqFlags:
				m.flags = uint32(v)
			case fieldMqNotify:
				m.notify = uint32(v)
			default:
				m.signo = uint32(v)
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return m, false, protowire.ParseError(n)
		}
		b = b[n:]
	}
	if ok && (m.name == "" || strings.Contains(m.name, "/") || m.notify > 3 || m.signo > 64) {
		return m, false, fmt.Errorf("mqueue %q (notify %d, signal %d): %w", m.name, m.notify, m.signo, images.ErrCorrupt)
	}
	return m, ok, nil
}

func openMqueue(r *Restorer, fe *fdinfo.FileEntry) (*os.File, error) {
	// stasis' other external file (iouring.go).
	if u, ok, err := uringOf(fe); ok || err != nil {
		if err != nil {
			return nil, err
		}
		return openUring(fe.GetId(), u)
	}
	m, ok, err := mqOf(fe)
	if err == nil && !ok {
		err = fmt.Errorf("external file %d: no plugin of criu's is %w", fe.GetId(), ErrUnsupported)
	}
	if err != nil {
		return nil, err
	}
	var create *ns.MQueue
	if m.queue != nil {
		e := images.MqueueEntry.New().Interface()
		if err := proto.Unmarshal(m.queue, e); err != nil {
			return nil, fmt.Errorf("mqueue /%s: %w: %w", m.name, err, images.ErrCorrupt)
		}
		if create, err = ns.MQueueFrom(e); err != nil {
			return nil, err
		}
	}
	// Every task of the tree is in the root's ipc namespace.
	pid := 0
	for _, h := range r.HostPids {
		pid = h
		break
	}
	if pid == 0 {
		pid = os.Getpid()
	}
	return ns.OpenMQueue(pid, m.name, int(m.flags), create)
}

// restoreMqNotify registers the notification of the queue open at fd in
// task t, which held it (mq_notify is its owner's): the kind and signal
// as the kernel showed them; sigev_value, which it does not show, is 0.
func restoreMqNotify(t remote.Task, fd uint32, fe *fdinfo.FileEntry) error {
	m, ok, err := mqOf(fe)
	if err != nil || !ok || m.notify == 0 {
		return err
	}
	sev := make([]byte, 64) // struct sigevent
	binary.LittleEndian.PutUint32(sev[8:], m.signo)
	binary.LittleEndian.PutUint32(sev[12:], m.notify-1)
	a, err := t.Put(0, sev)
	if err != nil {
		return err
	}
	if _, err := t.Call("mq_notify", unix.SYS_MQ_NOTIFY, uint64(fd), a); err != nil {
		return fmt.Errorf("fd %d: notification of queue /%s: %w", fd, m.name, err)
	}
	return nil
}
