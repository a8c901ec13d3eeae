package checksum

import (
	"errors"
	"os"
	"path/filepath"
	"runtime/metrics"
	"strings"
	"testing"
)

// FuzzVerify gives Verify a fuzzed manifest and a fuzzed image beside it
// (seeds: the manifests of the real dumps of test/images, with their
// inventory.img). Properties: no panic, allocation bounded whatever block
// sizes and lengths the manifest claims, an error that names the manifest
// or an image and wraps ErrMismatch or is about a file it lists.
func FuzzVerify(f *testing.F) {
	manifests, _ := filepath.Glob(filepath.Join("..", "..", "test", "images", "*", FileName))
	if len(manifests) == 0 {
		f.Fatal("no seed manifests under test/images")
	}
	for _, m := range manifests {
		mb, err := os.ReadFile(m)
		if err != nil {
			f.Fatal(err)
		}
		ib, err := os.ReadFile(filepath.Join(filepath.Dir(m), "inventory.img"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(mb, ib)
	}
	f.Add([]byte(`{"version":1,"files":{"inventory.img":{"size":3,"block":67108864,"crc32c":[1]}}}`), []byte("abc"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, manifest, img []byte) {
		os.WriteFile(filepath.Join(dir, FileName), manifest, 0o600)
		os.WriteFile(filepath.Join(dir, "inventory.img"), img, 0o600)
		before := heapAllocs()
		err := Verify(dir)

		if n := heapAllocs() - before; n > 64<<20+uint64(8*len(manifest)) {
			t.Fatalf("verify allocated %d MiB for a %d byte manifest and a %d byte image", n>>20, len(manifest), len(img))
		}
		if err == nil {
			return
		}
		if msg := err.Error(); !strings.Contains(msg, FileName) && !strings.Contains(msg, "image ") {
			t.Fatalf("error names neither the manifest nor an image: %v", err)
		}
		if !errors.Is(err, ErrMismatch) && !strings.HasPrefix(err.Error(), "image ") {
			t.Fatalf("error is not a mismatch nor about an image it lists: %v", err)
		}
	})
}

// heapAllocs is the bytes allocated so far, read without stopping the
// world (testutil.HeapAllocs; testutil is not imported by this package's
// tests to keep them free of the module's heavier dependencies).
func heapAllocs() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
