package images

import (
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/runtime/protoimpl"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// stasis' own images: what criu has no image for. Their messages are
// described here (no generated code: the descriptor is built on first use) and
// framed as criu's, with a magic of their own that criu and crit do not
// know, so criu ignores the file (it opens images by name) and `stasis
// show` decodes it. In proto2 terms:
//
//	package stasis;
//	// mqueue-ID.img: the POSIX message queues of ipc namespace ID
//	// (criu 4.2 keeps none: "mqueue isn't empty").
//	message mq_message { required uint32 prio = 1; required bytes data = 2; }
//	message mqueue_entry {
//		required string name = 1;     // without its leading '/'
//		required uint32 mode = 2;     // permission bits
//		required uint32 uid = 3;
//		required uint32 gid = 4;
//		required int64 maxmsg = 5;
//		required int64 msgsize = 6;
//		repeated mq_message messages = 7; // in the order they are received
//	}
//
// The types are built on first use, not at init: protodesc.NewFile pulls in
// descriptor.proto's reflection (~2 ms of every command's start-up, most
// of which never meet an mqueue image).
var MqueueEntry, MqMessage protoreflect.MessageType = lazyType{0}, lazyType{1}

var stasisTypesOnce = sync.OnceValues(stasisTypes)

// lazyType is one of the types stasisTypes builds, built when first asked.
type lazyType struct{ which int }

func (l lazyType) get() protoreflect.MessageType {
	e, m := stasisTypesOnce()
	if l.which == 0 {
		return e
	}
	return m
}

func (l lazyType) New() protoreflect.Message                  { return l.get().New() }
func (l lazyType) Zero() protoreflect.Message                 { return l.get().Zero() }
func (l lazyType) Descriptor() protoreflect.MessageDescriptor { return l.get().Descriptor() }

// lazyMessage stands for an empty message of a lazyType in the kinds
// table, which only asks for its type (ProtoReflect) when an image of
// the kind is read or written.
type lazyMessage struct{ t lazyType }

func (l lazyMessage) ProtoReflect() protoreflect.Message { return l.t.Zero() }

func stasisTypes() (protoreflect.MessageType, protoreflect.MessageType) {
	req, rep := descriptorpb.FieldDescriptorProto_LABEL_REQUIRED.Enum(), descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	t := func(x descriptorpb.FieldDescriptorProto_Type) *descriptorpb.FieldDescriptorProto_Type {
		return x.Enum()
	}
	field := func(name string, n int32, l *descriptorpb.FieldDescriptorProto_Label, ty *descriptorpb.FieldDescriptorProto_Type, msg string) *descriptorpb.FieldDescriptorProto {
		f := &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(n), Label: l, Type: ty, JsonName: proto.String(name)}
		if msg != "" {
			f.TypeName = proto.String(msg)
		}
		return f
	}
	fd := &descriptorpb.FileDescriptorProto{
		Name:    proto.String("stasis/mqueue.proto"),
		Package: proto.String("stasis"),
		Syntax:  proto.String("proto2"),
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("mq_message"), Field: []*descriptorpb.FieldDescriptorProto{
				field("prio", 1, req, t(descriptorpb.FieldDescriptorProto_TYPE_UINT32), ""),
				field("data", 2, req, t(descriptorpb.FieldDescriptorProto_TYPE_BYTES), ""),
			}},
			{Name: proto.String("mqueue_entry"), Field: []*descriptorpb.FieldDescriptorProto{
				field("name", 1, req, t(descriptorpb.FieldDescriptorProto_TYPE_STRING), ""),
				field("mode", 2, req, t(descriptorpb.FieldDescriptorProto_TYPE_UINT32), ""),
				field("uid", 3, req, t(descriptorpb.FieldDescriptorProto_TYPE_UINT32), ""),
				field("gid", 4, req, t(descriptorpb.FieldDescriptorProto_TYPE_UINT32), ""),
				field("maxmsg", 5, req, t(descriptorpb.FieldDescriptorProto_TYPE_INT64), ""),
				field("msgsize", 6, req, t(descriptorpb.FieldDescriptorProto_TYPE_INT64), ""),
				field("messages", 7, rep, t(descriptorpb.FieldDescriptorProto_TYPE_MESSAGE), ".stasis.mq_message"),
			}},
		},
	}
	// Built from its raw form as generated code is, in a registry of its
	// own: protodesc.NewFile would link protodesc, whose init costs every
	// command ~2 ms.
	raw, err := proto.Marshal(fd)
	if err != nil {
		panic("images: stasis/mqueue.proto: " + err.Error())
	}
	f := protoimpl.DescBuilder{RawDescriptor: raw, FileRegistry: new(protoregistry.Files)}.Build().File
	return dynamicpb.NewMessageType(f.Messages().ByName("mqueue_entry")), dynamicpb.NewMessageType(f.Messages().ByName("mq_message"))
}
