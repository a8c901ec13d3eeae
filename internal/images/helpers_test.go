package images

import (
	"fmt"
	"strings"
	"testing"

	bpfmap_data "github.com/checkpoint-restore/go-criu/v8/crit/images/bpfmap-data"
	ghost_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	ipc_msg "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-msg"
	ipc_sem "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-sem"
	ipc_shm "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-shm"
	pipe_data "github.com/checkpoint-restore/go-criu/v8/crit/images/pipe-data"
	sk_packet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-packet"
	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// nameOf instantiates a kind's pattern.
func nameOf(k *kind) string {
	return strings.NewReplacer("%u", "1", "%x", "1f").Replace(k.pattern)
}

// filler sets every field of a message (one member per oneof, two
// elements per list) to distinct values, so that a round trip exercises
// every field the generated types have.
type filler struct{ n int }

func (f *filler) fill(m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if o := fd.ContainingOneof(); o != nil && o.Fields().Get(0) != fd {
			continue
		}
		if fd.Message() != nil && depth > 3 && fd.Cardinality() != protoreflect.Required {
			continue
		}
		switch {
		case fd.IsMap():
			continue
		case fd.IsList():
			l := m.Mutable(fd).List()
			for j := 0; j < 2; j++ {
				if fd.Message() != nil {
					e := l.NewElement()
					f.fill(e.Message(), depth+1)
					l.Append(e)
				} else {
					l.Append(f.scalar(fd))
				}
			}
		case fd.Message() != nil:
			v := m.NewField(fd)
			f.fill(v.Message(), depth+1)
			m.Set(fd, v)
		default:
			m.Set(fd, f.scalar(fd))
		}
	}
}

func (f *filler) scalar(fd protoreflect.FieldDescriptor) protoreflect.Value {
	f.n++
	n := f.n
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(n%2 == 1)
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		return protoreflect.ValueOfEnum(vals.Get(n % vals.Len()).Number())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(n))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(n))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(int64(n) << 33)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(n) << 33)
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(n) / 2)
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(float64(n) / 4)
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(fmt.Sprintf("s%d", n))
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte{byte(n), 0, 0xff})
	}
	panic("unhandled kind " + fd.Kind().String())
}

// sample builds a complete image of kind k: every field set, extra data
// consistent with the entries. variant selects the ghost-file layout.
func sample(t testing.TB, k *kind, variant int) *Image {
	t.Helper()
	f := &filler{n: variant * 1000}
	img := &Image{Magic: k.magic}
	n := 2
	switch {
	case k.single:
		n = 1
	case k.first != nil:
		n = 3
	}
	for i := 0; i < n; i++ {
		m := k.newMsg(i)
		f.fill(m.ProtoReflect(), 0)
		var x []byte
		switch e := m.(type) {
		case *pipe_data.PipeDataEntry:
			x = []byte("hello")
			e.Bytes = proto.Uint32(uint32(len(x)))
		case *sk_packet.SkPacketEntry:
			x = []byte("abc")
			e.Length = proto.Uint32(3)
		case *tcp_stream.TcpStreamEntry:
			x = []byte("inOUT")
			e.InqLen, e.OutqLen = proto.Uint32(2), proto.Uint32(3)
		case *bpfmap_data.BpfmapDataEntry:
			x = []byte("kkkkvvvv")
			e.KeysBytes, e.ValuesBytes = proto.Uint32(4), proto.Uint32(4)
		case *ipc_shm.IpcShmEntry:
			x = []byte("shm\x00\x00\x00\x00\x00")
			e.Size, e.InPagemaps = proto.Uint64(5), proto.Bool(false)
		case *ipc_sem.IpcSemEntry:
			x = []byte{1, 0, 2, 0, 3, 0, 0, 0}
			e.Nsems = proto.Uint32(3)
		case *ipc_msg.IpcMsgEntry:
			var err error
			x, err = EncodeIPCMessages([]IPCMessage{
				{Msg: &ipc_msg.IpcMsg{Mtype: proto.Uint64(1), Msize: proto.Uint32(3)}, Text: []byte("one")},
				{Msg: &ipc_msg.IpcMsg{Mtype: proto.Uint64(2), Msize: proto.Uint32(9)}, Text: []byte("two three")},
			})
			if err != nil {
				t.Fatal(err)
			}
			e.Qnum = proto.Uint32(2)
		case *ghost_file.GhostFileEntry:
			e.Chunks = proto.Bool(variant == 1)
			if variant != 1 {
				x = []byte("whole ghost file content")
				n = 1
			}
		case *ghost_file.GhostChunkEntry:
			x = []byte("chunk")
			e.Len = proto.Uint64(uint64(len(x)))
		}
		img.Entries = append(img.Entries, m)
		if k.extra != nil {
			img.Extra = append(img.Extra, x)
		}
	}
	return img
}

// entryKinds are the kinds that have entries (not raw).
func entryKinds() []*kind {
	var out []*kind
	for _, k := range kinds {
		if !k.isRaw() {
			out = append(out, k)
		}
	}
	return out
}
