package ns

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/linux"
)

// POSIX message queues. A queue lives in its ipc namespace's mqueue file
// system, with or without an open fd; criu 4.2 keeps none of its messages
// ("mqueue isn't empty", and an open queue fails its dump: "Can't lookup
// mount"). stasis keeps each queue (name, mode, owner, attributes and
// every message with its priority) in an image of its own,
// mqueue-ID.img (images/stasis.go), for every queue of an ipc namespace
// the tree owns; a queue of stasis' own ipc namespace that a task holds
// open travels with its fd instead (internal/files, mqueue.go), as a file
// on disk would. There is no way to peek at a queue: its messages are
// received and sent back in the order they came out (priority, then
// arrival), which leaves the queue as it was. That send would fire a
// notification registered on the queue, so a queue with messages and a
// registration is refused. The registration itself is restored by its
// owner (files.RestoreOwners); the kernel shows its kind and signal, not
// its sigev_value, which comes back as 0.

// MQueue is one POSIX message queue.
type MQueue struct {
	Name            string // without its leading '/'
	Mode, UID, GID  uint32
	MaxMsg, MsgSize int64
	Msgs            []MQMessage
}

// MQMessage is one queued message.
type MQMessage struct {
	Prio uint32
	Data []byte
}

// MQNotify is a queue's notification registration, as the queue's file
// shows it: Pid 0 when there is none.
type MQNotify struct {
	Type  int // SIGEV_SIGNAL 0, SIGEV_NONE 1, SIGEV_THREAD 2
	Signo int
	Pid   int // as stasis' pid namespace sees it
}

// MQStatus reads the registration of the queue open at fd (its file's
// "QSIZE:... NOTIFY:... SIGNO:... NOTIFY_PID:..." line, read at offset 0
// so that the fd's own offset does not move).
func MQStatus(fd int) (MQNotify, error) {
	var n MQNotify
	b := make([]byte, 128)
	k, err := unix.Pread(fd, b, 0)
	if err != nil {
		return n, os.NewSyscallError("pread", err)
	}
	for _, f := range strings.Fields(string(b[:k])) {
		key, val, ok := strings.Cut(f, ":")
		if !ok {
			continue
		}
		v, _ := strconv.Atoi(val)
		switch key {
		case "NOTIFY":
			n.Type = v
		case "SIGNO":
			n.Signo = v
		case "NOTIFY_PID":
			n.Pid = v
		}
	}
	return n, nil
}

// ReadMQueue reads queue name, open read-write at fd by stasis.
func ReadMQueue(fd int, name string) (*MQueue, error) {
	a, err := mqGetattr(fd)
	if err != nil {
		return nil, fmt.Errorf("queue /%s: %w", name, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("queue /%s: %w", name, os.NewSyscallError("fstat", err))
	}
	q := &MQueue{Name: name, Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid, MaxMsg: a.Maxmsg, MsgSize: a.Msgsize}
	if a.Curmsgs == 0 {
		return q, nil
	}
	n, err := MQStatus(fd)
	if err != nil {
		return nil, fmt.Errorf("queue /%s: %w", name, err)
	}
	if n.Pid != 0 {
		return nil, fmt.Errorf("queue /%s has %d messages and a notification registered by pid %d: reading them would fire it; a queue with both is %w",
			name, a.Curmsgs, n.Pid, ErrNotSupported)
	}
	buf := make([]byte, a.Msgsize)
	for i := int64(0); i < a.Curmsgs; i++ {
		k, prio, err := mqReceive(fd, buf)
		if errors.Is(err, unix.ETIMEDOUT) || errors.Is(err, unix.EAGAIN) {
			break // taken meanwhile by a task outside the tree
		}
		if err != nil {
			q.refill(fd)
			return nil, fmt.Errorf("queue /%s: message %d: %w", name, i, err)
		}
		q.Msgs = append(q.Msgs, MQMessage{Prio: prio, Data: append([]byte(nil), buf[:k]...)})
	}
	if err := q.refill(fd); err != nil {
		return nil, fmt.Errorf("queue /%s: put its messages back: %w", name, err)
	}
	return q, nil
}

func (q *MQueue) refill(fd int) error {
	for _, m := range q.Msgs {
		if err := mqSend(fd, m.Data, m.Prio); err != nil {
			return err
		}
	}
	return nil
}

// Create makes queue q, with its messages, in the calling thread's ipc
// namespace.
func (q *MQueue) Create() error {
	fd, err := mqOpen(q.Name, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_CLOEXEC, 0o600, &mqAttr{Maxmsg: q.MaxMsg, Msgsize: q.MsgSize})
	if err != nil {
		return fmt.Errorf("create queue /%s (maxmsg %d, msgsize %d): %w", q.Name, q.MaxMsg, q.MsgSize, err)
	}
	defer unix.Close(fd)
	if err := unix.Fchown(fd, int(q.UID), int(q.GID)); err != nil {
		return fmt.Errorf("queue /%s: owner %d:%d: %w", q.Name, q.UID, q.GID, os.NewSyscallError("fchown", err))
	}
	if err := unix.Fchmod(fd, q.Mode); err != nil {
		return fmt.Errorf("queue /%s: mode %o: %w", q.Name, q.Mode, os.NewSyscallError("fchmod", err))
	}
	if err := q.refill(fd); err != nil {
		return fmt.Errorf("queue /%s: its messages: %w", q.Name, err)
	}
	return nil
}

// OpenMQueue opens queue name with flags in the ipc namespace of host pid
// pid; a queue that is not there is first made from create, if given (a
// queue of stasis' own namespace removed since the dump).
func OpenMQueue(pid int, name string, flags int, create *MQueue) (*os.File, error) {
	var f *os.File
	err := linux.InNamespace(pid, unix.CLONE_NEWIPC, func() error {
		fd, err := mqOpen(name, flags&^(unix.O_CREAT|unix.O_EXCL)|unix.O_CLOEXEC, 0, nil)
		if errors.Is(err, unix.ENOENT) && create != nil {
			if err = create.Create(); err == nil {
				fd, err = mqOpen(name, flags&^(unix.O_CREAT|unix.O_EXCL)|unix.O_CLOEXEC, 0, nil)
			}
		}
		if err != nil {
			return err
		}
		f = os.NewFile(uintptr(fd), "/"+name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open queue /%s: %w", name, err)
	}
	return f, nil
}

// MQStatusIn reads the registration of queue name of the ipc namespace
// of pid, through an fd of its own (a task's may be write-only).
func MQStatusIn(pid int, name string) (MQNotify, error) {
	var n MQNotify
	err := linux.InNamespace(pid, unix.CLONE_NEWIPC, func() error {
		fd, err := mqOpen(name, unix.O_RDONLY|unix.O_CLOEXEC, 0, nil)
		if err != nil {
			return fmt.Errorf("open queue /%s: %w", name, err)
		}
		defer unix.Close(fd)
		n, err = MQStatus(fd)
		return err
	})
	return n, err
}

// ReadMQueueIn reads queue name of the ipc namespace of pid.
func ReadMQueueIn(pid int, name string) (*MQueue, error) {
	var q *MQueue
	err := linux.InNamespace(pid, unix.CLONE_NEWIPC, func() error {
		fd, err := mqOpen(name, unix.O_RDWR|unix.O_CLOEXEC, 0, nil)
		if err != nil {
			return fmt.Errorf("open queue /%s: %w", name, err)
		}
		defer unix.Close(fd)
		q, err = ReadMQueue(fd, name)
		return err
	})
	return q, err
}

// Entry is q as its mqueue-ID.img entry.
func (q *MQueue) Entry() proto.Message {
	m := images.MqueueEntry.New()
	fs := m.Descriptor().Fields()
	m.Set(fs.ByName("name"), protoreflect.ValueOfString(q.Name))
	m.Set(fs.ByName("mode"), protoreflect.ValueOfUint32(q.Mode))
	m.Set(fs.ByName("uid"), protoreflect.ValueOfUint32(q.UID))
	m.Set(fs.ByName("gid"), protoreflect.ValueOfUint32(q.GID))
	m.Set(fs.ByName("maxmsg"), protoreflect.ValueOfInt64(q.MaxMsg))
	m.Set(fs.ByName("msgsize"), protoreflect.ValueOfInt64(q.MsgSize))
	l := m.Mutable(fs.ByName("messages")).List()
	for _, msg := range q.Msgs {
		e := images.MqMessage.New()
		ef := e.Descriptor().Fields()
		e.Set(ef.ByName("prio"), protoreflect.ValueOfUint32(msg.Prio))
		e.Set(ef.ByName("data"), protoreflect.ValueOfBytes(msg.Data))
		l.Append(protoreflect.ValueOfMessage(e))
	}
	return m.Interface()
}

// MQueueFrom reads an mqueue entry back, checking what the kernel would
// refuse later.
func MQueueFrom(pm proto.Message) (*MQueue, error) {
	m := pm.ProtoReflect()
	fs := m.Descriptor().Fields()
	q := &MQueue{
		Name: m.Get(fs.ByName("name")).String(), Mode: uint32(m.Get(fs.ByName("mode")).Uint()),
		UID: uint32(m.Get(fs.ByName("uid")).Uint()), GID: uint32(m.Get(fs.ByName("gid")).Uint()),
		MaxMsg: m.Get(fs.ByName("maxmsg")).Int(), MsgSize: m.Get(fs.ByName("msgsize")).Int(),
	}
	if q.Name == "" || len(q.Name) > 255 || strings.Contains(q.Name, "/") || q.MaxMsg <= 0 || q.MsgSize <= 0 || q.MaxMsg > 1<<16 || q.MsgSize > 1<<24 {
		return nil, fmt.Errorf("queue %q (maxmsg %d, msgsize %d): %w", q.Name, q.MaxMsg, q.MsgSize, ErrBadImage)
	}
	l := m.Get(fs.ByName("messages")).List()
	if int64(l.Len()) > q.MaxMsg {
		return nil, fmt.Errorf("queue /%s: %d messages, at most %d: %w", q.Name, l.Len(), q.MaxMsg, ErrBadImage)
	}
	for i := 0; i < l.Len(); i++ {
		e := l.Get(i).Message()
		ef := e.Descriptor().Fields()
		msg := MQMessage{Prio: uint32(e.Get(ef.ByName("prio")).Uint()), Data: e.Get(ef.ByName("data")).Bytes()}
		if int64(len(msg.Data)) > q.MsgSize || msg.Prio >= 32768 {
			return nil, fmt.Errorf("queue /%s: message %d of %d bytes, priority %d: %w", q.Name, i, len(msg.Data), msg.Prio, ErrBadImage)
		}
		q.Msgs = append(q.Msgs, msg)
	}
	return q, nil
}

func mqueueName(id uint32) string { return fmt.Sprintf("mqueue-%d.img", id) }

// listMQueues names the queues of the calling thread's ipc namespace,
// through a mount of its mqueue file system that no mount namespace sees
// (fsopen takes the caller's ipc namespace).
func listMQueues() ([]string, error) {
	fsfd, err := unix.Fsopen("mqueue", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("fsopen mqueue", err)
	}
	defer unix.Close(fsfd)
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return nil, os.NewSyscallError("fsconfig mqueue", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("fsmount mqueue", err)
	}
	defer unix.Close(mfd)
	// The mount's fd is a path only: its root opened for reading.
	dfd, err := unix.Openat(mfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("open mqueue root", err)
	}
	d := os.NewFile(uintptr(dfd), "mqueue")
	defer d.Close()
	return d.Readdirnames(-1)
}

// dumpMQueues writes every queue of the ipc namespace of pid.
func dumpMQueues(dir *images.Dir, pid int, id uint32) error {
	var qs []proto.Message
	err := linux.InNamespace(pid, unix.CLONE_NEWIPC, func() error {
		names, err := listMQueues()
		if err != nil {
			return err
		}
		for _, n := range names {
			fd, err := mqOpen(n, unix.O_RDWR|unix.O_CLOEXEC, 0, nil)
			if err != nil {
				return fmt.Errorf("open queue /%s: %w", n, err)
			}
			q, err := ReadMQueue(fd, n)
			unix.Close(fd)
			if err != nil {
				return err
			}
			qs = append(qs, q.Entry())
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("POSIX message queues of the ipc namespace of pid %d: %w", pid, err)
	}
	if len(qs) == 0 {
		return nil
	}
	return dir.Write(mqueueName(id), qs...)
}

// readMQueues reads mqueue-ID.img, if the dump has one.
func readMQueues(dir *images.Dir, id uint32) ([]*MQueue, error) {
	name := mqueueName(id)
	if !dir.Has(name) {
		return nil, nil
	}
	r, err := dir.NewReader(name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var qs []*MQueue
	for {
		e := images.MqueueEntry.New().Interface()
		err := r.Next(e)
		if errors.Is(err, io.EOF) {
			return qs, nil
		}
		if err != nil {
			return nil, err
		}
		q, err := MQueueFrom(e)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", name, err)
		}
		qs = append(qs, q)
	}
}

// restoreMQueues makes the queues in the new ipc namespace of pid (after
// its sysctls, the limits they were made under).
func restoreMQueues(pid int, qs []*MQueue) error {
	if len(qs) == 0 {
		return nil
	}
	err := linux.InNamespace(pid, unix.CLONE_NEWIPC, func() error {
		for _, q := range qs {
			if err := q.Create(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("restore the POSIX message queues in pid %d: %w", pid, err)
	}
	return nil
}
