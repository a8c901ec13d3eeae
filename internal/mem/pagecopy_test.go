package mem

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/checksum"
	"github.com/stasis-cr/stasis/internal/progress"
)

// TestCopyToFile copies scattered runs of this process' own memory into a
// file through the parallel workers' windows and checks the bytes, their order and
// the per-block sums, across window and block bounds.
func TestCopyToFile(t *testing.T) {
	const pages = 3*copyWindowSize/PageSize + 300
	mem, err := unix.Mmap(-1, 0, pages*PageSize+2*PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	for i := range mem {
		mem[i] = byte(i*7 + i/PageSize)
	}
	base := uint64(addrOf(mem))
	// A hole of one page after the first run, a shared (no-pin) run, a
	// run across several windows.
	runs := []Run{
		{Addr: base, Pages: 5},
		{Addr: base + 6*PageSize, Pages: 2, Shared: true},
		{Addr: base + 8*PageSize, Pages: pages - 6},
	}
	var want []byte
	for _, r := range runs {
		lo := int(r.Addr - base)
		want = append(want, mem[lo:lo+int(r.Pages*PageSize)]...)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "pages-1.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	calls := 0
	sum, err := copyToFile(os.Getpid(), runs, f, func() error { calls++; return nil }, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("file differs from the runs (%d bytes, want %d)", len(got), len(want))
	}
	if wins := (len(want) + copyWindowSize - 1) / copyWindowSize; calls != wins {
		t.Errorf("stop called %d times, want once per window (%d)", calls, wins)
	}
	if sum.Size != int64(len(want)) || sum.Block != checksum.PagesBlock || len(sum.CRC) != (len(want)+checksum.PagesBlock-1)/checksum.PagesBlock {
		t.Fatalf("sum %d bytes, block %d, %d crcs", sum.Size, sum.Block, len(sum.CRC))
	}
	for i, c := range sum.CRC {
		lo := i * checksum.PagesBlock
		if w := checksum.BlockCRC(want[lo:min(lo+checksum.PagesBlock, len(want))]); c != w {
			t.Fatalf("block %d: crc %#x, want %#x", i, c, w)
		}
	}
}

// TestCopyToFileStops: an error from stop ends the copy with it.
func TestCopyToFileStops(t *testing.T) {
	buf, err := unix.Mmap(-1, 0, 2*copyWindowSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(buf)
	stopErr := errors.New("interrupted")
	f, err := os.Create(filepath.Join(t.TempDir(), "pages-1.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	_, err = copyToFile(os.Getpid(), []Run{{Addr: uint64(addrOf(buf)), Pages: copyWindowSize / PageSize * 2}}, f, func() error {
		if n++; n == 2 {
			return stopErr
		}
		return nil
	}, nil)
	if !errors.Is(err, stopErr) {
		t.Errorf("copy = %v, want the stop error", err)
	}
}

func TestWindows(t *testing.T) {
	w := windows([]Run{{Addr: 0x10000, Pages: 3}, {Addr: 0x20000, Pages: 6}}, 4*PageSize)
	if len(w) != 3 || w[0].size != 4*PageSize || w[1].off != 4*PageSize || w[2].size != PageSize || w[2].off != 8*PageSize {
		t.Fatalf("windows %+v", w)
	}
	if len(w[0].runs) != 2 || w[0].runs[1].Addr != 0x20000 || w[0].runs[1].Pages != 1 || w[1].runs[0].Addr != 0x21000 {
		t.Errorf("first windows' runs %+v %+v", w[0].runs, w[1].runs)
	}
}

// TestCopyToFileOverwrites: what the file held before goes, and the meter
// counts every byte.
func TestCopyToFileOverwrites(t *testing.T) {
	mem, err := unix.Mmap(-1, 0, 40*PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	for i := range mem {
		mem[i] = byte(i * 13)
	}
	runs := []Run{{Addr: uint64(addrOf(mem)), Pages: 3}, {Addr: uint64(addrOf(mem)) + 10*PageSize, Pages: 30}}
	want := append(append([]byte{}, mem[:3*PageSize]...), mem[10*PageSize:]...)
	f, err := os.Create(filepath.Join(t.TempDir(), "pages-1.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Write(bytes.Repeat([]byte{0xff}, 50*PageSize)) // left over: must go
	m := progress.New()
	s, err := copyToFile(os.Getpid(), runs, f, nil, m)
	if err != nil {
		t.Fatal(err)
	}
	if done, total, _ := m.Read(); done != 33*PageSize || total != 33*PageSize {
		t.Errorf("meter %d/%d, want %d", done, total, 33*PageSize)
	}
	got, _ := os.ReadFile(f.Name())
	if !bytes.Equal(got, want) {
		t.Errorf("file differs from the runs: %d bytes, want %d", len(got), len(want))
	}
	if len(s.CRC) != 1 || s.CRC[0] != checksum.BlockCRC(want) {
		t.Errorf("sum %+v", *s)
	}
}
