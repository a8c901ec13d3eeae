package mem

import (
	"fmt"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"google.golang.org/protobuf/proto"
)

// TestPagedAreasRefusesWrappingCount: 2^52 pages times the page size wraps
// to 0, so such an entry once passed as empty, its pages counted as none
// in the pages file and then copied for ever.
func TestPagedAreasRefusesWrappingCount(t *testing.T) {
	vmas := []*vma.VmaEntry{{
		Start: proto.Uint64(0x400000), End: proto.Uint64(0x401000), Pgoff: proto.Uint64(0), Shmid: proto.Uint64(0),
		Prot: proto.Uint32(3), Flags: proto.Uint32(0x22), Status: proto.Uint32(AreaRegular | AnonPrivate), Fd: proto.Int64(-1),
	}}
	for _, n := range []uint64{1 << 52, 1<<52 + 1, 1<<64 - 1} {
		pe := []*pagemap.PagemapEntry{{Vaddr: proto.Uint64(0x400000), NrPages: proto.Uint64(n), Flags: proto.Uint32(PEPresent)}}
		_, err := PagedAreas(vmas, pe, func(i int, err error) error { return fmt.Errorf("entry %d: %w", i, err) })
		if err == nil {
			t.Errorf("%d pages at 0x400000 in a one-page VMA accepted", n)
		}
	}
	pe := []*pagemap.PagemapEntry{{Vaddr: proto.Uint64(0x400000), NrPages: proto.Uint64(1), Flags: proto.Uint32(PEPresent)}}
	if _, err := PagedAreas(vmas, pe, func(i int, err error) error { return err }); err != nil {
		t.Errorf("one page in a one-page VMA: %v", err)
	}
}
