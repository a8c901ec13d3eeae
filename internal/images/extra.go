package images

import (
	"bytes"
	"encoding/binary"
	"fmt"

	ipc_msg "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-msg"
	ipc_sem "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-sem"
	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"
	"google.golang.org/protobuf/proto"
)

// Helpers for the extra blobs whose layout is more than "n raw bytes".

// TCPQueues splits the extra data of a tcp-stream entry into the receive
// queue (InqLen bytes) and the send queue (OutqLen bytes), as sk-tcp.c
// writes them.
func TCPQueues(e *tcp_stream.TcpStreamEntry, extra []byte) (inq, outq []byte, err error) {
	in, out := uint64(e.GetInqLen()), uint64(e.GetOutqLen())
	if uint64(len(extra)) != in+out {
		return nil, nil, fmt.Errorf("tcp stream extra data: %d bytes, want inq %d + outq %d", len(extra), in, out)
	}
	return extra[:in], extra[in:], nil
}

// SemValues decodes the extra data of an ipcns-sem entry: Nsems u16
// values, padded to 8 bytes.
func SemValues(e *ipc_sem.IpcSemEntry, extra []byte) ([]uint16, error) {
	n := uint64(e.GetNsems())
	if uint64(len(extra)) != roundUp(2*n, 8) {
		return nil, fmt.Errorf("ipc sem extra data: %d bytes for %d semaphores", len(extra), n)
	}
	v := make([]uint16, n)
	for i := range v {
		v[i] = binary.LittleEndian.Uint16(extra[2*i:])
	}
	return v, nil
}

// IPCMessage is one message of a System V message queue.
type IPCMessage struct {
	Msg  *ipc_msg.IpcMsg // Mtype, Msize
	Text []byte          // Msize bytes
}

// IPCMessages decodes the extra data of an ipcns-msg entry: Qnum times a
// u32-framed ipc_msg followed by its text padded to 8 bytes.
func IPCMessages(e *ipc_msg.IpcMsgEntry, extra []byte) ([]IPCMessage, error) {
	fr := newFrameReader(bytes.NewReader(extra), "ipcns-msg extra data", int64(len(extra)))
	out := make([]IPCMessage, 0, min(e.GetQnum(), 1024))
	for i := uint32(0); i < e.GetQnum(); i++ {
		one, err := fr.ipcMsgs(1, true)
		if err != nil {
			return nil, err
		}
		size := binary.LittleEndian.Uint32(one)
		var m ipc_msg.IpcMsg
		if err := proto.Unmarshal(one[4:4+size], &m); err != nil {
			return nil, fmt.Errorf("ipc message %d: %w", i, err)
		}
		text := one[4+size:]
		out = append(out, IPCMessage{Msg: &m, Text: text[:m.GetMsize()]})
	}
	if fr.off != int64(len(extra)) {
		return nil, fmt.Errorf("ipcns-msg extra data: %d bytes after %d messages", int64(len(extra))-fr.off, e.GetQnum())
	}
	return out, nil
}

// EncodeIPCMessages builds the extra data of an ipcns-msg entry whose
// Qnum is len(msgs). Msg.Msize must equal len(Text).
func EncodeIPCMessages(msgs []IPCMessage) ([]byte, error) {
	var out []byte
	for i, m := range msgs {
		if uint64(m.Msg.GetMsize()) != uint64(len(m.Text)) {
			return nil, fmt.Errorf("ipc message %d: msize %d, text %d bytes", i, m.Msg.GetMsize(), len(m.Text))
		}
		b, err := proto.Marshal(m.Msg)
		if err != nil {
			return nil, fmt.Errorf("ipc message %d: %w", i, err)
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(len(b)))
		out = append(out, b...)
		out = append(out, m.Text...)
		out = append(out, make([]byte, roundUp(uint64(len(m.Text)), 8)-uint64(len(m.Text)))...)
	}
	return out, nil
}
