package images

import (
	"strings"
	"sync"

	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Warm readies the encoders and decoders of the images every dump and
// restore has (core, mm, pagemap, ids, fs, fdinfo, files, pstree,
// inventory) and returns at once. The protobuf runtime builds a message
// type's descriptor, reflection and coders on first use: for CoreEntry
// and the types under it that is ~5 ms of CPU, which the first core
// image of a command otherwise pays on its critical path. Done here on
// another goroutine while the caller waits for ptrace stops, it costs no
// wall time on two CPUs. Safe to call more than once and concurrently
// with encoding or decoding (the runtime's initialisation is guarded).
func Warm() { warmOnce.Do(func() { go warm() }) }

var warmOnce sync.Once

func warm() {
	for _, m := range []proto.Message{
		&criucore.CoreEntry{}, &mm.MmEntry{}, &pagemap.PagemapHead{}, &pagemap.PagemapEntry{},
		&criucore.TaskKobjIdsEntry{}, &fs.FsEntry{}, &fdinfo.FdinfoEntry{},
		&fdinfo.FileEntry{Reg: &regfile.RegFileEntry{}}, // cwd, root, exe: every dump has them
		&pstree.PstreeEntry{}, &inventory.InventoryEntry{},
	} {
		if _, ok := m.(*fdinfo.FileEntry); !ok { // not the other file kinds
			fill(m.ProtoReflect(), map[protoreflect.FullName]bool{})
		}
		b, err := proto.MarshalOptions{AllowPartial: true}.Marshal(m)
		if err == nil {
			_ = proto.UnmarshalOptions{AllowPartial: true}.Unmarshal(b, m.ProtoReflect().New().Interface())
		}
	}
}

// fill sets one instance of every message field of m, recursively (each
// type once), so that marshalling m meets every type under it.
func fill(m protoreflect.Message, seen map[protoreflect.FullName]bool) {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		md := fd.Message()
		// ti_*: the other architectures' registers.
		if md == nil || fd.IsMap() || seen[md.FullName()] || strings.HasPrefix(string(fd.Name()), "ti_") {
			continue
		}
		seen[md.FullName()] = true
		if fd.IsList() {
			l := m.Mutable(fd).List()
			e := l.NewElement()
			fill(e.Message(), seen)
			l.Append(e)
			continue
		}
		fill(m.Mutable(fd).Message(), seen)
	}
}
