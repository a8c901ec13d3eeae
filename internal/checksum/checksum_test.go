package checksum

import (
	"errors"
	"os"
	"path/filepath"
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
	if err := Write(dir); err != nil {
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

func TestNoManifest(t *testing.T) {
	if err := Verify(t.TempDir()); err != nil {
		t.Fatal(err)
	}
}
