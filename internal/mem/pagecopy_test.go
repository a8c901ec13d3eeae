package mem

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/checksum"
	"github.com/stasis-cr/stasis/internal/progress"
)

// TestCopyToFile copies scattered runs of this process' own memory into a
// file through the parallel windows and checks the bytes, their order and
// the per-block sums, across window and block bounds.
func TestCopyToFile(t *testing.T) {
	const pages = 3*copyChunk/PageSize + 300
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
	if calls != 4 {
		t.Errorf("stop called %d times, want once per window (4)", calls)
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
	buf, err := unix.Mmap(-1, 0, 2*copyChunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
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
	_, err = copyToFile(os.Getpid(), []Run{{Addr: uint64(addrOf(buf)), Pages: copyChunk / PageSize * 2}}, f, func() error {
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

// TestStreamToFile: the fallback for files that cannot be mapped writes
// the same bytes and sums as copyToFile.
func TestStreamToFile(t *testing.T) {
	mem, err := unix.Mmap(-1, 0, 40*PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	for i := range mem {
		mem[i] = byte(i * 13)
	}
	runs := []Run{{Addr: uint64(addrOf(mem)), Pages: 3}, {Addr: uint64(addrOf(mem)) + 10*PageSize, Pages: 30}}
	dir := t.TempDir()
	var sums []*checksum.Sum
	var files [][]byte
	for i, copyFn := range []func(int, []Run, *os.File, func() error, *progress.Meter) (*checksum.Sum, error){copyToFile, streamToFile} {
		f, err := os.Create(filepath.Join(dir, fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		f.Write(make([]byte, 5*PageSize)) // left over: must go
		m := progress.New()
		s, err := copyFn(os.Getpid(), runs, f, nil, m)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if done, total, _ := m.Read(); done != 33*PageSize || total != 33*PageSize {
			t.Errorf("copy %d: meter %d/%d, want %d", i, done, total, 33*PageSize)
		}
		b, _ := os.ReadFile(f.Name())
		sums, files = append(sums, s), append(files, b)
	}
	if !bytes.Equal(files[0], files[1]) || len(files[0]) != 33*PageSize {
		t.Errorf("files differ or have the wrong size: %d, %d bytes", len(files[0]), len(files[1]))
	}
	if fmt.Sprint(*sums[0]) != fmt.Sprint(*sums[1]) {
		t.Errorf("sums differ: %+v, %+v", *sums[0], *sums[1])
	}
}
