package images

import (
	"errors"
	"fmt"
)

// Sentinels. Decoding errors are returned as *Error, which names the file and
// the offset and wraps one of these, so callers can test with errors.Is and
// still print something a human can act on.
var (
	// ErrCorrupt: the bytes are there but do not make sense (entry size over
	// the limit, protobuf that does not unmarshal, trailing data).
	ErrCorrupt = errors.New("corrupt")
	// ErrTruncated: the file ends before the data its own framing announces.
	ErrTruncated = errors.New("truncated")
	// ErrBadMagic: the header does not match the image kind, or is unknown.
	ErrBadMagic = errors.New("bad magic")
	// ErrNotWritable: Create could not create a file in the directory.
	ErrNotWritable = errors.New("not writable")
	// ErrInconsistent: images that each decode but contradict each other
	// (a VMA naming a file id files.img lacks, pages outside every VMA).
	ErrInconsistent = errors.New("inconsistent image")
	// errClosed: an image written to after it was closed (a caller's bug).
	errClosed = errors.New("image already closed")
)

// Error locates a decoding or encoding failure in an image file.
type Error struct {
	File   string // path (or name) of the image file
	Offset int64  // byte offset of the entry or header field at fault
	Err    error
}

func (e *Error) Error() string {
	return fmt.Sprintf("image %s at offset %d: %v", e.File, e.Offset, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// ErrUnsafePath: a path in an image that the restore must not follow: not
// absolute where it must be, with a ".." component, a NUL byte, or an
// image name that is not a single file name of the images dir.
var ErrUnsafePath = errors.New("unsafe path")
