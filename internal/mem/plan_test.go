package mem

import (
	"bytes"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
)

func TestUffdMarker(t *testing.T) {
	for pme, want := range map[uint64]bool{
		0x420000000000003f: true,  // swap, uffd-wp, type 31 (SWP_PTE_MARKER), offset 1 (PTE_MARKER_UFFD_WP): as read here
		0xa200000000103d9d: false, // a present file page, write-protected
		0x4200000000000020: false, // swap, uffd-wp, type 0: a page really swapped out
		0x4200000000000000: false, // frames hidden (no CAP_SYS_ADMIN): cannot tell, saved
		0x400000000000003f: false, // no uffd-wp bit
	} {
		if got := uffdMarker(pme); got != want {
			t.Errorf("uffdMarker(%#x) = %v, want %v", pme, got, want)
		}
	}
}

type fakeXfer struct {
	log  []string
	data bytes.Buffer
}

func (f *fakeXfer) Add(e *pagemap.PagemapEntry) error {
	kind := "data"
	if InParent(e) {
		kind = "parent"
	}
	f.log = append(f.log, kind)
	return nil
}
func (f *fakeXfer) Write(b []byte) (int, error) { return f.data.Write(b) }
func (f *fakeXfer) Close() error                { return nil }

// TestEntries: runs of one kind in one area make one entry, never across
// areas; an entry's data follows its Add, entries in parent come between.
func TestEntries(t *testing.T) {
	plan := []PlanRun{
		{Addr: 0x1000, Pages: 1, area: 0},
		{Addr: 0x2000, Pages: 2, area: 0, Shared: true}, // read differently, one entry
		{Addr: 0x4000, Pages: 1, area: 0, InParent: true},
		{Addr: 0x5000, Pages: 1, area: 1}, // adjacent, but another area
		{Addr: 0x6000, Pages: 2, area: 1, InParent: true},
	}
	es := entries(plan)
	var got []uint64
	for _, e := range es {
		got = append(got, e.GetVaddr(), e.GetNrPages())
	}
	want := []uint64{0x1000, 3, 0x4000, 1, 0x5000, 1, 0x6000, 2}
	if len(got) != len(want) {
		t.Fatalf("entries %#x, want %#x", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("entries %#x, want %#x", got, want)
		}
	}
	f := &fakeXfer{}
	w := &entryWriter{x: f, ents: es}
	if _, err := w.Write(make([]byte, 3*PageSize+PageSize)); err != nil {
		t.Fatal(err)
	}
	if err := w.advance(); err != nil {
		t.Fatal(err)
	}
	if l := f.log; len(l) != 4 || l[0] != "data" || l[1] != "parent" || l[2] != "data" || l[3] != "parent" {
		t.Fatalf("Add order %v", l)
	}
	if _, err := w.Write(make([]byte, 1)); err == nil {
		t.Fatal("data beyond the pagemap taken")
	}
}
