package mem

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// TestLazyParents: a lazy restore of a chain leaves its pages in parent
// to the daemon only when every page with data in a lazy area is PE_LAZY
// (else one filled page could bring a huge page over missing ones), and
// ParentReader reads them from the level that holds them.
func TestLazyParents(t *testing.T) {
	root := t.TempDir()
	writeLevel(t, filepath.Join(root, "1"), "", chainEntry{at: 0, n: 4, fill: 0x11})
	writeLevel(t, filepath.Join(root, "2"), "../1", chainEntry{at: 0, n: 1, fill: 0x22, flags: PEPresent | peLazy}, chainEntry{at: 1, n: 3})
	d := writeLevel(t, filepath.Join(root, "3"), "../2", chainEntry{at: 0, n: 2}, chainEntry{at: 2, n: 1, fill: 0x33, flags: PEPresent | peLazy},
		chainEntry{at: 3, n: 1})
	ents := readEntries(t, d)
	anon := &vma.VmaEntry{Start: proto.Uint64(chainBase), End: proto.Uint64(chainBase + 4*PageSize),
		Flags: proto.Uint32(unix.MAP_PRIVATE | unix.MAP_ANONYMOUS)}
	if !LazyParents(ents, []*vma.VmaEntry{anon}) {
		t.Fatal("every page with data is PE_LAZY: the pages in parent should be lazy")
	}
	ents[1].Flags = proto.Uint32(PEPresent) // a page filled before the task runs
	if LazyParents(ents, []*vma.VmaEntry{anon}) {
		t.Fatal("a page without PE_LAZY in the area: the pages in parent must be filled")
	}
	file := &vma.VmaEntry{Start: anon.Start, End: anon.End, Flags: proto.Uint32(unix.MAP_PRIVATE)}
	if LazyParents(ents, []*vma.VmaEntry{file}) {
		t.Fatal("no lazy area: nothing is lazy")
	}
	pr := NewParentReader(d, "pagemap-1.img")
	defer pr.Close()
	buf := make([]byte, 2*PageSize)
	if err := pr.ReadAt(buf, chainBase); err != nil {
		t.Fatal(err)
	}
	want := append(bytes.Repeat([]byte{0x22}, PageSize), bytes.Repeat([]byte{0x11}, PageSize)...)
	if !bytes.Equal(buf, want) {
		t.Fatalf("pages in parent at 0: got %#x..., %#x..., want 0x22 then 0x11", buf[0], buf[PageSize])
	}
	if err := pr.ReadAt(buf[:PageSize], chainBase+3*PageSize); err != nil || buf[0] != 0x11 {
		t.Fatalf("page 3 in parent: %#x %v, want 0x11", buf[0], err)
	}
}
