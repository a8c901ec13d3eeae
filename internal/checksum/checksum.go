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
	"sync/atomic"
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

// PagesBlock is the block size of big files' sums.
const PagesBlock = 1 << 20

func blockFor(size int64) int64 {
	if size > PagesBlock {
		return PagesBlock
	}
	return 4096
}

func sumFile(path string) (*Sum, error) { return sumFileBlocks(path, 0) }

// sumFileBlocks sums path in blocks of block bytes (0: by its size).
func sumFileBlocks(path string, block int64) (*Sum, error) {
	f, err := os.Open(path)
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
	if s.Size/block >= parallelBlocks && runtime.GOMAXPROCS(0) > 1 {
		if crc, ok := sumParallel(f, s.Size, block); ok {
			s.CRC = crc
			return s, nil
		}
		// Shorter than it was a moment ago: read what there is.
	}
	// The block comes from the manifest, which may be damaged: a small
	// file needs no more than its size, whatever block it claims.
	buf := make([]byte, max(min(s.Block, fi.Size()), 1))
	for {
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			s.CRC = append(s.CRC, crc32.Checksum(buf[:n], table))
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return s, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// parallelBlocks is the size, in blocks, from which a file is summed on
// several CPUs: a restore verifies the pages images before it creates
// anything, a read of every byte (1 GiB: ~120 ms on one CPU of these VMs).
const parallelBlocks = 8

// sumParallel sums the size bytes of f in blocks on up to four
// goroutines, each reading its blocks with pread into a buffer of its
// own; false if the file is shorter than size.
func sumParallel(f *os.File, size, block int64) ([]uint32, bool) {
	nb := (size + block - 1) / block
	crc := make([]uint32, nb)
	var next atomic.Int64
	var short atomic.Bool
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), 4) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, block)
			for i := next.Add(1) - 1; i < nb && !short.Load(); i = next.Add(1) - 1 {
				b := buf[:min(block, size-i*block)]
				if _, err := f.ReadAt(b, i*block); err != nil {
					short.Store(true)
					return
				}
				crc[i] = crc32.Checksum(b, table)
			}
		}()
	}
	wg.Wait()
	return crc, !short.Load()
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
// a manifest verifies trivially.
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
	// A few files at a time: a dump of 10,000 threads has as many core
	// images, each an open, a read and a close. The error reported is
	// the first in name order, as one file after the other would.
	errs := make([]error, len(names))
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := min(verifiers, len(names)); w > 0; w-- {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(names); i = int(next.Add(1) - 1) {
				errs[i] = verifyFile(dir, names[i], m.Files[names[i]])
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// verifiers is how many files Verify reads at once.
const verifiers = 4

// verifyFile checks file n of dir against its sum in the manifest.
func verifyFile(dir, n string, want *Sum) error {
	if strings.ContainsRune(n, '/') || want == nil || want.Block <= 0 || want.Block > 64<<20 {
		return fmt.Errorf("%s lists a bad entry %q: %w", FileName, n, ErrMismatch)
	}
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
