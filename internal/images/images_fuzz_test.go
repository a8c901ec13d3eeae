package images

import (
	"bytes"
	"errors"
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
