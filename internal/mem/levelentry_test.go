package mem

import (
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"google.golang.org/protobuf/proto"
)

// FuzzDecodeLevelEntry: decodeLevelEntry reads any bytes as
// proto.Unmarshal reads them into a pagemap_entry: the same entries, the
// same refusals.
func FuzzDecodeLevelEntry(f *testing.F) {
	for _, pe := range []*pagemap.PagemapEntry{
		{Vaddr: proto.Uint64(0x7f0000000000), CompatNrPages: proto.Uint32(3), Flags: proto.Uint32(PEPresent)},
		{Vaddr: proto.Uint64(0x1000), CompatNrPages: proto.Uint32(1), Flags: proto.Uint32(peParent), NrPages: proto.Uint64(1 << 33)},
		{Vaddr: proto.Uint64(0x2000), CompatNrPages: proto.Uint32(2), InParent: proto.Bool(true)},
		{Vaddr: proto.Uint64(0x3000), CompatNrPages: proto.Uint32(2)},
		{Vaddr: proto.Uint64(0x3000)},
	} {
		b, err := proto.MarshalOptions{AllowPartial: true}.Marshal(pe)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x08, 0x80, 0x20, 0x10, 0x01, 0x1a, 0x00}) // in_parent as bytes: unknown
	f.Fuzz(func(t *testing.T, b []byte) {
		pe := &pagemap.PagemapEntry{}
		perr := proto.Unmarshal(b, pe)
		e, n, hasData, err := decodeLevelEntry(b)
		if (perr != nil) != (err != nil) {
			t.Fatalf("% x: proto.Unmarshal: %v, decodeLevelEntry: %v", b, perr, err)
		}
		if perr != nil {
			return
		}
		if e.vaddr != pe.GetVaddr() || n != NrPages(pe) || hasData != HasData(pe) || e.inParent != InParent(pe) || e.flags != pe.GetFlags() {
			t.Fatalf("% x: decoded vaddr %#x pages %d data %v parent %v flags %#x, proto says %v", b, e.vaddr, n, hasData, e.inParent, e.flags, pe)
		}
	})
}
