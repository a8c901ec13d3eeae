// Package checksum protects an images directory against corruption. CRIU's
// format has no checksums, so a flipped bit in a register, a VMA bound or a
// page would restore silently wrong. At the end of a dump stasis writes
// FileName, a JSON manifest with a CRC32C per block of every image file;
// restore verifies it before it creates anything and names the file and
// the byte range that changed. Images without a manifest (made by criu)
// are restored unverified. Foreign files in the directory (runc's
// descriptors.json, logs) are not covered and not required.
package checksum

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/stasis-cr/stasis/internal/linux"
)

// FileName is the manifest's name inside the images directory.
const FileName = "stasis-checksums.json"

// ErrMismatch is wrapped by errors about image files that differ from
// what was dumped.
var ErrMismatch = errors.New("checksum mismatch")

var table = crc32.MakeTable(crc32.Castagnoli)

// Manifest lists the checksummed files of one dump.
type Manifest struct {
	Version int             `json:"version"`
	Files   map[string]*Sum `json:"files"`
}

// Sum is the CRC32C of each Block-sized block of one file.
type Sum struct {
	Size  int64    `json:"size"`
	Block int64    `json:"block"`
	CRC   []uint32 `json:"crc32c"`
}

func covered(name string) bool {
	return strings.HasSuffix(name, ".img")
}

// PagesBlock is the block size of big files' sums, SmallBlock that of
// files up to PagesBlock bytes.
const (
	PagesBlock = 1 << 20
	SmallBlock = 4096
)

func blockFor(size int64) int64 {
	if size > PagesBlock {
		return PagesBlock
	}
	return SmallBlock
}

func sumFile(path string) (*Sum, error) { return sumFileBlocks(path, 0) }

// sumFileBlocks sums path in blocks of block bytes (0: by its size).
func sumFileBlocks(path string, block int64) (*Sum, error) {
	f, err := linux.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if block <= 0 {
		block = blockFor(fi.Size())
	}
	s := &Sum{Size: fi.Size(), Block: block}
	nblk := int((s.Size + block - 1) / block)
	s.CRC = make([]uint32, nblk)
	// The block comes from the manifest, which may be damaged: a small
	// file needs no more than its size, whatever block it claims.
	bufSize := max(min(s.Block, s.Size), 1)
	// A big file (a pages image) is summed by several goroutines, each
	// taking every n-th block.
	n := 1
	if nblk >= 8 {
		n = runtime.GOMAXPROCS(0)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf, put := blockBufs.Get(int(bufSize))
			defer put()
			for i := w; i < nblk; i += n {
				off := int64(i) * block
				k, err := f.ReadAt(buf[:min(block, s.Size-off)], off)
				if err != nil && !(err == io.EOF && off+int64(k) == s.Size) {
					errs[w] = err
					return
				}
				s.CRC[i] = crc32.Checksum(buf[:k], table)
			}
		}()
	}
	wg.Wait()
	if err := firstErr(errs); err != nil {
		return nil, err
	}
	return s, nil
}

// Of returns the Sum of a whole file's content b, as the manifest lists
// it (the block size chosen by b's length): for an image written from
// memory in one go, which need not be read back.
func Of(b []byte) *Sum {
	s := &Sum{Size: int64(len(b)), Block: blockFor(int64(len(b)))}
	for q := b; len(q) > 0; {
		n := min(len(q), int(s.Block))
		s.CRC = append(s.CRC, crc32.Checksum(q[:n], table))
		q = q[n:]
	}
	return s
}

// Hasher computes a file's Sum while it is written, so that the big
// pages images need not be read again.
type Hasher struct {
	w     io.Writer
	sum   Sum
	block []byte
}

// NewHasher returns a writer that passes everything to w and sums it in
// blocks of block bytes (1 MiB suits pages images).
func NewHasher(w io.Writer, block int64) *Hasher {
	return &Hasher{w: w, sum: Sum{Block: block}}
}

func (h *Hasher) Write(p []byte) (int, error) {
	n, err := h.w.Write(p)
	h.sum.Size += int64(n)
	for q := p[:n]; len(q) > 0; {
		take := min(len(q), int(h.sum.Block)-len(h.block))
		if len(h.block) == 0 && take == int(h.sum.Block) {
			h.sum.CRC = append(h.sum.CRC, crc32.Checksum(q[:take], table))
		} else {
			h.block = append(h.block, q[:take]...)
			if len(h.block) == int(h.sum.Block) {
				h.sum.CRC = append(h.sum.CRC, crc32.Checksum(h.block, table))
				h.block = h.block[:0]
			}
		}
		q = q[take:]
	}
	return n, err
}

// Sum returns the sum of everything written.
func (h *Hasher) Sum() *Sum {
	s := h.sum
	if len(h.block) > 0 {
		s.CRC = append(append([]uint32(nil), s.CRC...), crc32.Checksum(h.block, table))
	}
	return &s
}

// Write computes and writes the manifest of every image file in dir;
// known holds sums already computed while writing (see Hasher).
func Write(dir string, known map[string]*Sum) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	m := &Manifest{Version: 1, Files: map[string]*Sum{}}
	for _, e := range ents {
		if !e.Type().IsRegular() || !covered(e.Name()) {
			continue
		}
		if s := known[e.Name()]; s != nil {
			m.Files[e.Name()] = s
			continue
		}
		s, err := sumFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return fmt.Errorf("checksum %s: %w", e.Name(), err)
		}
		m.Files[e.Name()] = s
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, FileName+".tmp")
	// 0600 like every file of a dump: it lists the images and their sizes.
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, FileName))
}

// Verify checks every file the manifest of dir lists. A directory without
// a manifest verifies trivially. The files, and the blocks of big ones,
// are read and summed on GOMAXPROCS goroutines; the error is the one of
// the first file by name, whichever finishes first.
func Verify(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, FileName))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil || m.Version != 1 {
		return fmt.Errorf("%s in %s is damaged: %w", FileName, dir, ErrMismatch)
	}
	names := make([]string, 0, len(m.Files))
	for n := range m.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		want := m.Files[n]
		if strings.ContainsRune(n, '/') || want == nil || want.Block <= 0 || want.Block > 64<<20 {
			return fmt.Errorf("%s lists a bad entry %q: %w", FileName, n, ErrMismatch)
		}
	}
	errs := make([]error, len(names))
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(names)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				errs[i] = verifyFile(dir, names[i], m.Files[names[i]])
			}
		}()
	}
	for i := range names {
		work <- i
	}
	close(work)
	wg.Wait()
	return firstErr(errs)
}

func firstErr(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// verifyFile checks one file against its sum.
func verifyFile(dir, n string, want *Sum) error {
	got, err := sumFileBlocks(filepath.Join(dir, n), want.Block)
	if err != nil {
		return fmt.Errorf("image %s: %w", n, err)
	}
	if got.Size != want.Size {
		return fmt.Errorf("image %s is %d bytes, was %d at dump time (at offset %d): %w", n, got.Size, want.Size, min(got.Size, want.Size), ErrMismatch)
	}
	for i := range got.CRC {
		if i >= len(want.CRC) || got.CRC[i] != want.CRC[i] {
			lo := int64(i) * want.Block
			hi := min(lo+want.Block, got.Size)
			return fmt.Errorf("image %s at offset %d: bytes %d-%d changed since the dump: %w", n, lo, lo, hi-1, ErrMismatch)
		}
	}
	return nil
}
