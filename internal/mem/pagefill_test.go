package mem

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestFillWindows(t *testing.T) {
	// A span across a window bound, one left out (a lazy gap), a small
	// one in the same window as the next.
	spans := []fillSpan{
		{vaddr: 0x100000, off: 0, n: 3 * PageSize},
		{vaddr: 0x200000, off: 5 * PageSize, n: 2 * PageSize},
		{vaddr: 0x300000, off: 7 * PageSize, n: 1 * PageSize},
	}
	w := fillWindows(spans, 4*PageSize)
	if len(w) != 2 {
		t.Fatalf("windows %+v", w)
	}
	if w[0].lo != 0 || w[0].hi != 3*PageSize || len(w[0].parts) != 1 {
		t.Errorf("window 0 %+v", w[0])
	}
	if w[1].lo != 5*PageSize || w[1].hi != 8*PageSize || len(w[1].parts) != 2 || w[1].parts[1].vaddr != 0x300000 {
		t.Errorf("window 1 %+v", w[1])
	}
	w = fillWindows([]fillSpan{{vaddr: 0x100000, off: 2 * PageSize, n: 5 * PageSize}}, 4*PageSize)
	if len(w) != 2 || w[0].hi != 4*PageSize || w[1].parts[0].vaddr != 0x102000 || w[1].parts[0].n != 3*PageSize {
		t.Errorf("split span: %+v", w)
	}
}

// TestFillFromFile fills this process' own memory from a file through the
// workers' windows, across window bounds, with a span left out.
func TestFillFromFile(t *testing.T) {
	const pages = 3*fillWindowSize/PageSize + 7
	src := make([]byte, pages*PageSize)
	for i := range src {
		src[i] = byte(i*7 + i/PageSize)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "pages-1.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(src); err != nil {
		t.Fatal(err)
	}
	dst, err := unix.Mmap(-1, 0, len(src), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(dst)
	base := uint64(addrOf(dst))
	spans := []fillSpan{
		{vaddr: base, off: 0, n: 10 * PageSize},
		// pages 10-11 of the file are skipped (lazy)
		{vaddr: base + 12*PageSize, off: 12 * PageSize, n: (pages - 12) * PageSize},
	}
	calls := 0
	st, err := fillFromFile(os.Getpid(), spans, f, nil, nil, func() error { calls++; return nil }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Restored != pages-2 {
		t.Errorf("restored %d pages, want %d", st.Restored, pages-2)
	}
	if calls != 4 {
		t.Errorf("stop called %d times, want 4", calls)
	}
	want := append([]byte{}, src...)
	clear(want[10*PageSize : 12*PageSize])
	if !bytes.Equal(dst, want) {
		t.Error("memory differs from the image")
	}
	// A span past the end of the file: a clear error, not a short fill.
	_, err = fillFromFile(os.Getpid(), []fillSpan{{vaddr: base, off: uint64(len(src)) - PageSize, n: 2 * PageSize}}, f, nil, nil, nil, nil)
	if err == nil {
		t.Error("fill past the end of the image succeeded")
	}
}
