package lazy

import (
	"reflect"
	"testing"
)

func TestRanges(t *testing.T) {
	iovs := []iov{{0x1000, 0x5000, 0x1000}, {0x8000, 0x9000, 0x8000}}
	got := dropIovs(iovs, 0x2000, 0x3000)
	want := []iov{{0x1000, 0x2000, 0x1000}, {0x3000, 0x5000, 0x3000}, {0x8000, 0x9000, 0x8000}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("drop: %x, want %x", got, want)
	}
	if findIov(got, 0x2000) != -1 || findIov(got, 0x3fff) != 1 || findIov(got, 0x8000) != 2 {
		t.Fatalf("find in %x", got)
	}
	// mremap of 0x3000-0x5000 to 0x20000: the pages keep their image
	// addresses; what was at the destination is gone.
	got = remapIovs(append(got, iov{0x20000, 0x21000, 0x20000}), 0x3000, 0x20000, 0x2000)
	want = []iov{{0x1000, 0x2000, 0x1000}, {0x8000, 0x9000, 0x8000}, {0x20000, 0x22000, 0x3000}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("remap: %x, want %x", got, want)
	}
}
