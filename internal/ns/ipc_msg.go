package ns

import (
	"encoding/binary"
	"fmt"
	"os"

	ipc_msg "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-msg"
	ipc_var "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-var"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
)

// System V message queues: one ipcns-msg entry per queue, its messages
// (type and text) as the entry's extra data, copied with MSG_COPY so that
// the queue keeps them.

const (
	msgQnumOff   = permSize + 32 // msg_qnum in struct msqid64_ds
	msgQbytesOff = permSize + 40 // msg_qbytes
)

func dumpMsg(dir *images.Dir, nsID uint32, v *ipc_var.IpcVarEntry) error {
	w, err := dir.NewWriter(ipcFile("msg", nsID))
	if err != nil {
		return err
	}
	defer w.Close()
	buf := make([]byte, 8+max(int(v.GetMsgCtlmax()), int(v.GetMsgCtlmnb()), 8192))
	err = statAll("msg", func() (int, error) {
		return msgctl(0, msgInfo, make([]byte, dsSize))
	}, func(idx int, b []byte) (int, error) {
		return msgctl(idx, msgStatAny, b)
	}, func(id int, b []byte) error {
		le := binary.NativeEndian
		qnum := int(le.Uint64(b[msgQnumOff:]))
		var msgs []images.IPCMessage
		for i := 0; i < qnum; i++ {
			n, err := msgCopy(id, i, buf)
			if err != nil {
				return fmt.Errorf("msg id %d message %d of %d: %w", id, i, qnum, os.NewSyscallError("msgrcv(MSG_COPY)", err))
			}
			msgs = append(msgs, images.IPCMessage{
				Msg:  &ipc_msg.IpcMsg{Mtype: proto.Uint64(le.Uint64(buf)), Msize: proto.Uint32(uint32(n))},
				Text: append([]byte(nil), buf[8:8+n]...),
			})
		}
		extra, err := images.EncodeIPCMessages(msgs)
		if err != nil {
			return err
		}
		e := &ipc_msg.IpcMsgEntry{Desc: desc(b, id), Qbytes: proto.Uint32(uint32(le.Uint64(b[msgQbytesOff:]))), Qnum: proto.Uint32(uint32(qnum))}
		if err := w.Write(e); err != nil {
			return err
		}
		if len(extra) == 0 {
			return nil
		}
		return w.WriteExtra(extra)
	})
	if err != nil {
		return err
	}
	return w.Close()
}

type msgImage struct {
	e    *ipc_msg.IpcMsgEntry
	msgs []images.IPCMessage
}

func readMsg(dir *images.Dir, nsID uint32) ([]msgImage, error) {
	var out []msgImage
	err := readIPCImage(dir, "msg", nsID, func() *ipc_msg.IpcMsgEntry { return &ipc_msg.IpcMsgEntry{} }, func(e *ipc_msg.IpcMsgEntry) bool { return true },
		func(e *ipc_msg.IpcMsgEntry, extra []byte) error {
			m, err := images.IPCMessages(e, extra)
			if err != nil {
				return fmt.Errorf("msg id %d: %w", e.GetDesc().GetId(), err)
			}
			out = append(out, msgImage{e: e, msgs: m})
			return nil
		})
	return out, err
}

// restore makes the queue with its size first, then sends its messages
// again in order.
func (q msgImage) restore() error {
	d := q.e.GetDesc()
	if err := createWithID("msg", d, func(flags int) (int, error) {
		return msgget(int32(d.GetKey()), flags)
	}); err != nil {
		return err
	}
	id := int(d.GetId())
	b := make([]byte, dsSize)
	if _, err := msgctl(id, unix.IPC_STAT, b); err != nil {
		return fmt.Errorf("msg id %d: %w", id, os.NewSyscallError("msgctl(IPC_STAT)", err))
	}
	setPerm(b, d)
	binary.NativeEndian.PutUint64(b[msgQbytesOff:], uint64(q.e.GetQbytes()))
	if _, err := msgctl(id, ipcSet, b); err != nil {
		return fmt.Errorf("msg id %d: queue size %d: %w", id, q.e.GetQbytes(), os.NewSyscallError("msgctl(IPC_SET)", err))
	}
	for i, m := range q.msgs {
		buf := binary.NativeEndian.AppendUint64(nil, m.Msg.GetMtype())
		buf = append(buf, m.Text...)
		if err := msgsnd(id, buf); err != nil {
			return fmt.Errorf("msg id %d: message %d (type %d, %d bytes): %w", id, i, m.Msg.GetMtype(), len(m.Text), os.NewSyscallError("msgsnd", err))
		}
	}
	return nil
}
