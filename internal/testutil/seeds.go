package testutil

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime/metrics"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// Real dumps of victims live in test/images/NAME (see its README), without
// their pages-N.img files, whose sizes pages.sizes keeps: they are the
// seeds of the fuzz targets of every image decoder, so that `go test` runs
// the decoders on real images.

// SeedDumps returns the directories of the real dumps, sorted.
func SeedDumps(tb testing.TB) []string {
	tb.Helper()
	dirs, err := filepath.Glob(filepath.Join(ModuleRoot(), "test", "images", "*", "inventory.img"))
	if err != nil || len(dirs) == 0 {
		tb.Fatalf("no seed dumps under test/images: %v", err)
	}
	for i, d := range dirs {
		dirs[i] = filepath.Dir(d)
	}
	sort.Strings(dirs)
	return dirs
}

// SeedImages returns the files of the seed dumps whose names match glob
// (e.g. "core-*.img"), by path.
func SeedImages(tb testing.TB, glob string) map[string][]byte {
	tb.Helper()
	out := map[string][]byte{}
	for _, d := range SeedDumps(tb) {
		names, _ := filepath.Glob(filepath.Join(d, glob))
		for _, n := range names {
			b, err := os.ReadFile(n)
			if err != nil {
				tb.Fatal(err)
			}
			out[n] = b
		}
	}
	return out
}

// CopySeed copies seed dump src into dst (created), pages files made again
// as sparse files of their dumped sizes. With checksums false the manifest
// is left out, so that a changed image is decoded instead of refused by
// its checksum.
func CopySeed(tb testing.TB, src, dst string, checksums bool) {
	tb.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		tb.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range ents {
		switch n := e.Name(); {
		case n == "pages.sizes":
			copyPagesSizes(tb, filepath.Join(src, n), dst)
		case n == "stasis-checksums.json" && !checksums:
		case strings.HasSuffix(n, ".img") || n == "stasis-checksums.json":
			b, err := os.ReadFile(filepath.Join(src, n))
			if err != nil {
				tb.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dst, n), b, 0o600); err != nil {
				tb.Fatal(err)
			}
		}
	}
}

func copyPagesSizes(tb testing.TB, list, dst string) {
	f, err := os.Open(list)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, size, ok := strings.Cut(sc.Text(), " ")
		n, err := strconv.ParseInt(size, 10, 64)
		if !ok || err != nil || strings.ContainsRune(name, '/') {
			tb.Fatalf("%s: bad line %q", list, sc.Text())
		}
		p := filepath.Join(dst, name)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			tb.Fatal(err)
		}
		if err := os.Truncate(p, n); err != nil {
			tb.Fatal(err)
		}
	}
}

// MaxFuzzAlloc is what one decoding of a fuzzed image may allocate: far
// more than any seed dump needs, far less than what a corrupt length
// (4 GiB) would make a trusting decoder allocate.
const MaxFuzzAlloc = 256 << 20

// Allocated runs fn and returns the bytes the Go heap allocated meanwhile.
// A fuzz worker runs one input at a time, so the figure is fn's. It reads
// runtime/metrics, which does not stop the world as ReadMemStats does
// (tens of ms on a loaded machine, per input); small allocations are
// counted a span late, large ones at once, which is what matters here.
func Allocated(fn func()) uint64 {
	before := HeapAllocs()
	fn()
	return HeapAllocs() - before
}

// HeapAllocs is the bytes allocated on the Go heap since the start.
func HeapAllocs() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// CheckAlloc fails tb if fn allocates more than MaxFuzzAlloc.
func CheckAlloc(tb testing.TB, what string, fn func()) {
	tb.Helper()
	if n := Allocated(fn); n > MaxFuzzAlloc {
		tb.Fatalf("%s allocated %d MiB for one input (limit %d MiB)", what, n>>20, MaxFuzzAlloc>>20)
	}
}

// FuzzSeedImages fuzzes the images matching glob in the seed dumps that
// have one: each input replaces one of them in a copy of its dump, and
// read(t, path) is what the restore does with it. It must not panic nor
// allocate what a corrupt length asks for (CheckAlloc), and its error
// must name the image.
func FuzzSeedImages(f *testing.F, glob string, read func(t *testing.T, path string) error) {
	base := f.TempDir()
	var paths []string
	for _, src := range SeedDumps(f) {
		names, _ := filepath.Glob(filepath.Join(src, glob))
		if len(names) == 0 {
			continue
		}
		dst := filepath.Join(base, filepath.Base(src))
		CopySeed(f, src, dst, false)
		sort.Strings(names)
		for _, n := range names {
			b, err := os.ReadFile(n)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(uint8(len(paths)), b)
			paths = append(paths, filepath.Join(dst, filepath.Base(n)))
		}
	}
	if len(paths) == 0 {
		f.Fatalf("no seed dump has %s", glob)
	}
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		path := paths[int(which)%len(paths)]
		orig, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(path, orig, 0o600)
		CheckAlloc(t, filepath.Base(path), func() { err = read(t, path) })
		if err != nil && !strings.Contains(err.Error(), filepath.Base(path)) {
			t.Fatalf("error does not name %s: %v", filepath.Base(path), err)
		}
	})
}
