package mem

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// TestLazyOnly: pages a lazy dump left to its page server (PE_LAZY, no
// data) pass the parent check and are refused by a restore that is not
// lazy, naming the pagemap, the range and the flag to use.
func TestLazyOnly(t *testing.T) {
	d := writeLevel(t, filepath.Join(t.TempDir(), "2"), "", chainEntry{at: 0, n: 2, flags: peLazy})
	ents := readEntries(t, d)
	if p, err := ResolveParents(d, "pagemap-1.img", ents); err != nil || p != nil {
		t.Fatalf("ResolveParents: %v %v", p, err)
	}
	img := &Image{Pagemap: ents}
	if err := img.CheckLazy(1, true); err != nil {
		t.Fatalf("lazy restore: %v", err)
	}
	err := img.CheckLazy(1, false)
	if !errors.Is(err, ErrLazyPages) {
		t.Fatalf("restore: %v, want ErrLazyPages", err)
	}
	for _, w := range []string{"pagemap-1.img", "0x10000000-0x10002000", "--lazy-pages"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%q does not say %q", err, w)
		}
	}
}

func TestLazyVMA(t *testing.T) {
	e := func(flags int, status uint32) *vma.VmaEntry {
		return &vma.VmaEntry{Start: proto.Uint64(0x1000), End: proto.Uint64(0x3000), Flags: proto.Uint32(uint32(flags)), Status: proto.Uint32(status)}
	}
	anon := unix.MAP_PRIVATE | unix.MAP_ANONYMOUS
	for _, c := range []struct {
		e    *vma.VmaEntry
		want bool
	}{
		{e(anon, AreaRegular|AnonPrivate), true},
		{e(anon|unix.MAP_GROWSDOWN, AreaRegular|AnonPrivate|AreaStack), true},
		{e(anon|unix.MAP_LOCKED, AreaRegular|AnonPrivate), false},
		{e(anon, AreaRegular|AreaVDSO|AnonPrivate), false},
		{e(unix.MAP_PRIVATE, AreaRegular|FilePrivate), false},
		{e(unix.MAP_SHARED|unix.MAP_ANONYMOUS, AreaRegular|AnonShared), false},
		{e(anon, AreaRegular|AreaAIORing), false},
	} {
		if got := LazyVMA(c.e); got != c.want {
			t.Errorf("LazyVMA(flags %#x status %#x) = %v", c.e.GetFlags(), c.e.GetStatus(), got)
		}
	}
	img := &Image{MM: &mm.MmEntry{Vmas: []*vma.VmaEntry{e(anon, AreaRegular|AnonPrivate), e(unix.MAP_PRIVATE, AreaRegular|FilePrivate)}}}
	if a := img.LazyAreas(); len(a) != 1 || a[0] != [2]uint64{0x1000, 0x3000} {
		t.Errorf("LazyAreas = %v", a)
	}
}
