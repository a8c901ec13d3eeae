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
		_, _, err := PagedAreas(vmas, pe, func(i int, err error) error { return fmt.Errorf("entry %d: %w", i, err) })
		if err == nil {
			t.Errorf("%d pages at 0x400000 in a one-page VMA accepted", n)
		}
	}
	pe := []*pagemap.PagemapEntry{{Vaddr: proto.Uint64(0x400000), NrPages: proto.Uint64(1), Flags: proto.Uint32(PEPresent)}}
	if _, _, err := PagedAreas(vmas, pe, func(i int, err error) error { return err }); err != nil {
		t.Errorf("one page in a one-page VMA: %v", err)
	}
}

// TestPagedAreasCRIU: criu 4.2 writes one pagemap entry across adjacent
// VMAs (a relro page and .data) and dumps the vDSO's pages. The entry is
// split at the boundary, keeping the order of the data in the pages
// image; the vDSO's pages stay in the list but no VMA receives them.
func TestPagedAreasCRIU(t *testing.T) {
	area := func(start, end uint64, status uint32) *vma.VmaEntry {
		return &vma.VmaEntry{Start: proto.Uint64(start), End: proto.Uint64(end), Pgoff: proto.Uint64(0), Shmid: proto.Uint64(0),
			Prot: proto.Uint32(3), Flags: proto.Uint32(0x22), Status: proto.Uint32(status), Fd: proto.Int64(-1)}
	}
	vmas := []*vma.VmaEntry{
		area(0x400000, 0x401000, AreaRegular|FilePrivate),
		area(0x401000, 0x404000, AreaRegular|AnonPrivate),
		area(0x500000, 0x502000, AreaRegular|AreaVDSO|AnonPrivate),
	}
	pe := []*pagemap.PagemapEntry{
		{Vaddr: proto.Uint64(0x400000), NrPages: proto.Uint64(3), Flags: proto.Uint32(PEPresent)},
		{Vaddr: proto.Uint64(0x500000), NrPages: proto.Uint64(2), Flags: proto.Uint32(PEPresent)},
	}
	out, paged, err := PagedAreas(vmas, pe, func(i int, err error) error { return err })
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range out {
		got = append(got, fmt.Sprintf("%#x+%d", e.GetVaddr(), e.GetNrPages()))
	}
	if fmt.Sprint(got) != "[0x400000+1 0x401000+2 0x500000+2]" {
		t.Errorf("split entries %v", got)
	}
	if !paged[0x400000] || !paged[0x401000] || paged[0x500000] || len(paged) != 2 {
		t.Errorf("paged VMAs %v: want the two below the vDSO", paged)
	}
	// Past the last VMA it is an error still.
	pe[0].NrPages = proto.Uint64(5)
	if _, _, err := PagedAreas(vmas, pe, func(i int, err error) error { return err }); err == nil {
		t.Error("an entry running past its VMAs was accepted")
	}
}
