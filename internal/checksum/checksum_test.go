package checksum

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestVerifyFindsFlippedByte(t *testing.T) {
	dir := t.TempDir()
	small := make([]byte, 10000)
	big := make([]byte, 3<<20)
	for i := range big {
		big[i] = byte(i)
	}
	os.WriteFile(filepath.Join(dir, "core-1.img"), small, 0o644)
	os.WriteFile(filepath.Join(dir, "pages-1.img"), big, 0o644)
	os.WriteFile(filepath.Join(dir, "dump.log"), []byte("log"), 0o644)
	if err := Write(dir, nil); err != nil {
		t.Fatal(err)
	}
	if err := Verify(dir); err != nil {
		t.Fatalf("clean dir: %v", err)
	}
	// Logs and foreign files may change.
	os.WriteFile(filepath.Join(dir, "dump.log"), []byte("more log"), 0o644)
	if err := Verify(dir); err != nil {
		t.Fatalf("changed log: %v", err)
	}
	big[(2<<20)+5] ^= 1
	os.WriteFile(filepath.Join(dir, "pages-1.img"), big, 0o644)
	err := Verify(dir)
	if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "pages-1.img at offset 2097152") {
		t.Fatalf("flipped page byte: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "core-1.img"), small[:9000], 0o644)
	if err := Verify(dir); !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "core-1.img") {
		t.Fatalf("truncated core: %v", err)
	}
}

func TestHasherMatchesFile(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 5<<20+123)
	for i := range data {
		data[i] = byte(i * 31)
	}
	f, _ := os.Create(filepath.Join(dir, "pages-1.img"))
	h := NewHasher(f, PagesBlock)
	for _, n := range []int{10, 1 << 20, 3<<20 + 5, len(data)} {
		chunk := data[:min(n, len(data))]
		data = data[len(chunk):]
		h.Write(chunk)
	}
	f.Close()
	want, err := sumFile(filepath.Join(dir, "pages-1.img"))
	if err != nil {
		t.Fatal(err)
	}
	got := h.Sum()
	if got.Size != want.Size || len(got.CRC) != len(want.CRC) {
		t.Fatalf("hasher %d bytes %d blocks, file %d bytes %d blocks", got.Size, len(got.CRC), want.Size, len(want.CRC))
	}
	for i := range got.CRC {
		if got.CRC[i] != want.CRC[i] {
			t.Fatalf("block %d differs", i)
		}
	}
}

func TestNoManifest(t *testing.T) {
	if err := Verify(t.TempDir()); err != nil {
		t.Fatal(err)
	}
}

// TestSumParallel: a file of many blocks is summed on several CPUs into
// the same sums as one CPU gives, and a flipped byte names its block.
func TestSumParallel(t *testing.T) {
	dir := t.TempDir()
	const block = 4096
	data := make([]byte, 20*block+77)
	for i := range data {
		data[i] = byte(i * 13)
	}
	path := filepath.Join(dir, "pages-1.img")
	os.WriteFile(path, data, 0o644)
	got, err := sumFileBlocks(path, block)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.CRC) != 21 {
		t.Fatalf("%d blocks, want 21", len(got.CRC))
	}
	for i := range got.CRC {
		if want := BlockCRC(data[i*block : min((i+1)*block, len(data))]); got.CRC[i] != want {
			t.Fatalf("block %d: %#x, want %#x", i, got.CRC[i], want)
		}
	}
	if err := Write(dir, map[string]*Sum{"pages-1.img": got}); err != nil {
		t.Fatal(err)
	}
	data[17*block+3] ^= 0x40
	os.WriteFile(path, data, 0o644)
	if err := Verify(dir); !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "at offset 69632") {
		t.Fatalf("flipped byte in block 17: %v", err)
	}
}

// TestOfMatchesFile checks that Of sums a buffer as the manifest sums
// the file it is written to, at the block sizes' edges.
func TestOfMatchesFile(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []int{0, 1, 4095, 4096, 4097, 3 * 4096, PagesBlock, PagesBlock + 1, 3*PagesBlock + 7} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i*7 + n)
		}
		p := filepath.Join(dir, "core-1.img")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		want, err := sumFile(p)
		if err != nil {
			t.Fatal(err)
		}
		got := Of(data)
		if got.Size != want.Size || got.Block != want.Block || !slices.Equal(got.CRC, want.CRC) {
			t.Fatalf("%d bytes: Of gives %+v, the file %+v", n, got, want)
		}
	}
}
