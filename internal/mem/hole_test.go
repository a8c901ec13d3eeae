package mem

import "testing"

func TestFindHole(t *testing.T) {
	busy := [][2]uint64{
		{0x400000, 0x500000},
		{1 << 32, 1<<32 + 0x10000},
		{0x7ffff7a00000, 0x7ffff7c00000},
	}
	got, ok := findHole(busy, 0x10000)
	if !ok {
		t.Fatal("no hole")
	}
	for _, b := range busy {
		if got < b[1]+1<<20 && got+0x10000+1<<20 > b[0] {
			t.Errorf("hole %#x overlaps (with margin) %#x-%#x", got, b[0], b[1])
		}
	}
	if got < 1<<32 {
		t.Errorf("hole %#x below 4 GiB while space above is free", got)
	}
}
