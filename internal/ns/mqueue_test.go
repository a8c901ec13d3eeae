package ns

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/stasis-cr/stasis/internal/images"
)

func TestMQueueEntry(t *testing.T) {
	q := &MQueue{Name: "q", Mode: 0o640, UID: 1, GID: 2, MaxMsg: 4, MsgSize: 8,
		Msgs: []MQMessage{{Prio: 9, Data: []byte("m4")}, {Prio: 0, Data: []byte("m5")}}}
	b, err := proto.Marshal(q.Entry())
	if err != nil {
		t.Fatal(err)
	}
	e := images.MqueueEntry.New().Interface()
	if err := proto.Unmarshal(b, e); err != nil {
		t.Fatal(err)
	}
	got, err := MQueueFrom(e)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "q" || got.Mode != 0o640 || got.MaxMsg != 4 || len(got.Msgs) != 2 || string(got.Msgs[1].Data) != "m5" || got.Msgs[0].Prio != 9 {
		t.Errorf("round trip: %+v", got)
	}
	for _, bad := range []func(protoreflect.Message){
		func(m protoreflect.Message) {
			m.Set(m.Descriptor().Fields().ByName("name"), protoreflect.ValueOfString("a/b"))
		},
		func(m protoreflect.Message) {
			m.Set(m.Descriptor().Fields().ByName("maxmsg"), protoreflect.ValueOfInt64(1))
		},
		func(m protoreflect.Message) {
			m.Set(m.Descriptor().Fields().ByName("msgsize"), protoreflect.ValueOfInt64(1))
		},
	} {
		m := q.Entry().ProtoReflect()
		bad(m)
		if _, err := MQueueFrom(m.Interface()); !errors.Is(err, ErrBadImage) {
			t.Errorf("MQueueFrom of a bad entry: %v, want ErrBadImage", err)
		}
	}
}
