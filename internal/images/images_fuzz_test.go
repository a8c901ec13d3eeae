package images

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/metrics"
	"sort"
	"testing"

	"google.golang.org/protobuf/proto"
)

// FuzzDecode feeds arbitrary bytes to Decode, by magic (no name) and under
// a known name. Properties: no panic, errors are *Error, a decoded image
// re-encodes and decodes to the same thing, and the sized (bytes.Reader)
// and unsized (stream) paths agree.
func FuzzDecode(f *testing.F) {
	ks := entryKinds()
	for i, k := range ks {
		for v := 0; v < 2; v++ {
			f.Add(uint8(i), encodeImage(f, nameOf(k), sample(f, k, v)))
		}
	}
	f.Add(uint8(0), []byte{})
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		name := "fuzz"
		if int(which) < len(ks) {
			name = nameOf(ks[which])
		}
		img, err := Decode(bytes.NewReader(data), name)
		img2, err2 := Decode(onlyReader{bytes.NewReader(data)}, name)
		if (err == nil) != (err2 == nil) {
			t.Fatalf("sized and stream decoders disagree: %v / %v", err, err2)
		}
		if err != nil {
			var ie *Error
			if !errors.As(err, &ie) || !errors.As(err2, &ie) {
				t.Fatalf("error is not an *Error: %v / %v", err, err2)
			}
			return
		}
		sameImage(t, "stream", img2, img)
		k := byMagic[headerValue(data)]
		var b bytes.Buffer
		if err := Encode(&b, nameOf(k), img); err != nil {
			t.Fatalf("re-encode of a decoded image: %v", err)
		}
		img3, err := Decode(bytes.NewReader(b.Bytes()), nameOf(k))
		if err != nil {
			t.Fatalf("decode of re-encoded image: %v", err)
		}
		sameImage(t, "re-encoded", img3, img)
		for i := range img.Entries {
			if !proto.Equal(img.Entries[i], img3.Entries[i]) {
				t.Fatal("entry changed by re-encoding")
			}
		}
	})
}

// headerValue is the type magic of a well-formed header.
func headerValue(b []byte) uint32 {
	le := func(p []byte) uint32 { return uint32(p[0]) | uint32(p[1])<<8 | uint32(p[2])<<16 | uint32(p[3])<<24 }
	if le(b) == inventoryMagic {
		return inventoryMagic
	}
	return le(b[4:])
}

// FuzzDirReader reads an image of a real dump (test/images), replaced by
// the fuzzer's bytes, the way the restore does: Dir.NewReader, then Next
// and ReadExtra entry by entry. Properties: no panic, allocation bounded
// whatever the sizes claim, offsets that only grow and stay in the file,
// and every error an *Error naming the file and an offset inside it.
func FuzzDirReader(f *testing.F) {
	// testutil imports this package: the seeds are found by path (go
	// test runs in the package's directory).
	names, _ := filepath.Glob(filepath.Join("..", "..", "test", "images", "*", "*.img"))
	if len(names) == 0 {
		f.Fatal("no seed images under test/images")
	}
	sort.Strings(names)
	for i, p := range names {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint16(i), b)
	}
	dir := &Dir{Path: f.TempDir()}
	f.Fuzz(func(t *testing.T, which uint16, data []byte) {
		name := filepath.Base(names[int(which)%len(names)])
		k := lookup(name)
		if k == nil || k.isRaw() {
			t.Skip("not an image with entries")
		}
		path := filepath.Join(dir.Path, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(path)
		var err error
		before := heapAllocs()
		err = readEntries(dir, name, k, int64(len(data)))

		// testutil.MaxFuzzAlloc, which this package cannot import.
		if n := heapAllocs() - before; n > 256<<20 {
			t.Fatalf("%s: %d MiB allocated for a %d byte image", name, n>>20, len(data))
		}
		if err == nil {
			return
		}
		var ie *Error
		if !errors.As(err, &ie) {
			t.Fatalf("error is not an *Error: %v", err)
		}
		if ie.File != path || ie.Offset < 0 || ie.Offset > int64(len(data)) {
			t.Fatalf("error at %s offset %d, want %s and an offset within its %d bytes: %v", ie.File, ie.Offset, path, len(data), err)
		}
	})
}

// readEntries reads every entry and extra blob of an image.
func readEntries(d *Dir, name string, k *kind, size int64) error {
	r, err := d.NewReader(name)
	if err != nil {
		return err
	}
	defer r.Close()
	prev := r.Offset()
	for i := 0; ; i++ {
		m := k.newMsg(i)
		if err := r.Next(m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		x, err := r.ReadExtra()
		if err != nil {
			return err
		}
		if off := r.Offset(); off <= prev || off > size || int64(len(x)) > size {
			return fmt.Errorf("entry %d: offset %d after %d, extra of %d bytes, in a %d byte file", i, off, prev, len(x), size)
		}
		prev = r.Offset()
	}
}

// heapAllocs is testutil.HeapAllocs, which this package cannot import:
// bytes allocated so far, read without stopping the world.
func heapAllocs() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
