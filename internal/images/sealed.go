package images

import (
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/seal"
)

// Images sealed by stasis (--compress, --encrypt: internal/seal) are read
// transparently: a sealed file is decoded into an anonymous memory file
// when opened, which reads, maps and passes to a task as the plain image
// would. Images are sealed after they are written (SealDir), so their
// writers are unchanged.

// sealKey decrypts encrypted images (restore --key-file); nil: none.
var sealKey atomic.Pointer[[]byte]

// SetKey sets the key that decrypts encrypted images in this process.
func SetKey(key []byte) {
	if key == nil {
		sealKey.Store(nil)
		return
	}
	sealKey.Store(&key)
}

func key() []byte {
	if k := sealKey.Load(); k != nil {
		return *k
	}
	return nil
}

// OpenFile opens the image file at path read-only; a sealed one is
// checked and decoded (an error names the file and offset of the chunk
// that fails).
func OpenFile(path string) (*os.File, error) {
	f, err := linux.OpenFile(path, os.O_RDONLY, 0)
	if err != nil || !seal.IsSealed(f) {
		return f, err
	}
	defer f.Close()
	return seal.OpenFile(f, filepath.Base(path), key())
}

// Size is the size of the image file at path, decoded if sealed.
func Size(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if seal.IsSealed(f) {
		return seal.PlainSize(f)
	}
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}
