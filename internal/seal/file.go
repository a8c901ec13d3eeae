package seal

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// IsSealed reports whether the file f starts with a seal header.
func IsSealed(f *os.File) bool {
	b := make([]byte, len(Magic))
	n, _ := f.ReadAt(b, 0)
	return n == len(Magic) && string(b) == Magic
}

// SealFile replaces the file at path by its sealed form (named by its
// base name), through a temporary file beside it renamed over it. It
// returns the plain and sealed sizes.
func SealFile(path string, o Options) (plain, stored int64, err error) {
	src, err := os.Open(path)
	if err != nil {
		return 0, 0, fmt.Errorf("seal: %w", err)
	}
	defer src.Close()
	if IsSealed(src) {
		return 0, 0, nil
	}
	st, err := src.Stat()
	if err != nil {
		return 0, 0, fmt.Errorf("seal: %w", err)
	}
	tmp := path + ".seal-tmp"
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return 0, 0, fmt.Errorf("seal: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			dst.Close()
			os.Remove(tmp)
		}
	}()
	bw := bufio.NewWriterSize(dst, 4<<20)
	w, err := NewWriter(bw, filepath.Base(path), o)
	if err != nil {
		return 0, 0, err
	}
	if _, err := io.CopyBuffer(w, src, make([]byte, ChunkSize)); err != nil {
		w.Close()
		return 0, 0, fmt.Errorf("seal %s: %w", path, err)
	}
	if err := w.Close(); err != nil {
		return 0, 0, fmt.Errorf("seal %s: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		return 0, 0, fmt.Errorf("seal %s: %w", path, err)
	}
	if err := dst.Close(); err != nil {
		return 0, 0, fmt.Errorf("seal %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return 0, 0, fmt.Errorf("seal %s: %w", path, err)
	}
	ok = true
	return w.Plain, w.Stored, nil
}

// span is one chunk of a sealed file: where it is and where its plain
// bytes go.
type span struct {
	index    uint64
	off      int64 // of its header in the file
	plainOff int64
	hdr      []byte
	stored   uint32
}

// OpenFile decodes the sealed file f (named name when it was sealed)
// into an anonymous memory file (memfd), chunks in parallel, and returns
// it positioned at 0: it can be read, mapped and passed to a task like
// the plain image. A chunk that fails its checks is an error naming the
// file and its offset.
func OpenFile(f *os.File, name string, key []byte) (*os.File, error) {
	hb := make([]byte, headerSize)
	if _, err := f.ReadAt(hb, 0); err != nil {
		return nil, fmt.Errorf("%s: truncated at offset 0: %w", name, ErrCorrupt)
	}
	h, err := parseHeader(hb)
	if err != nil {
		return nil, fmt.Errorf("%s: offset 0: %w", name, err)
	}
	c, err := newCodec(name, h, key)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	var spans []span
	off, plain := int64(headerSize), int64(0)
	for idx := uint64(0); ; idx++ {
		chb := make([]byte, chunkHeaderSize)
		if _, err := f.ReadAt(chb, off); err != nil {
			return nil, fmt.Errorf("%s: truncated at offset %d (no last chunk): %w", name, off, ErrCorrupt)
		}
		ch := parseChunkHeader(chb)
		if ch.stored > maxStored || ch.plain > h.chunk || off+chunkHeaderSize+int64(ch.stored) > st.Size() {
			return nil, fmt.Errorf("%s: chunk %d at offset %d: %d stored bytes for %d, file of %d: %w", name, idx, off, ch.stored, ch.plain, st.Size(), ErrCorrupt)
		}
		spans = append(spans, span{index: idx, off: off, plainOff: plain, hdr: chb, stored: ch.stored})
		off += chunkHeaderSize + int64(ch.stored)
		plain += int64(ch.plain)
		if ch.flags&chunkLast != 0 {
			break
		}
	}
	if off != st.Size() {
		return nil, fmt.Errorf("%s: %d bytes after the last chunk at offset %d: %w", name, st.Size()-off, off, ErrCorrupt)
	}
	fd, err := unix.MemfdCreate("stasis:"+name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("%s: memfd: %w", name, err)
	}
	out := os.NewFile(uintptr(fd), f.Name())
	if err := out.Truncate(plain); err != nil {
		out.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	work := make(chan span)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(spans)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range work {
				err := decodeSpan(f, out, c, s)
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	for _, s := range spans {
		work <- s
	}
	close(work)
	wg.Wait()
	if len(errs) > 0 {
		out.Close()
		return nil, errs[0]
	}
	return out, nil
}

func decodeSpan(f, out *os.File, c *codec, s span) error {
	stored := make([]byte, s.stored)
	if _, err := f.ReadAt(stored, s.off+chunkHeaderSize); err != nil {
		return fmt.Errorf("%s: chunk %d at offset %d: %w", c.name, s.index, s.off, err)
	}
	p, err := c.open(s.index, s.hdr, stored, s.off)
	if err != nil {
		return err
	}
	if _, err := out.WriteAt(p, s.plainOff); err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	return nil
}

// PlainSize is the size of the plain data of the sealed file f, from its
// chunk headers (their contents are checked when it is opened).
func PlainSize(f *os.File) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	off, plain := int64(headerSize), int64(0)
	chb := make([]byte, chunkHeaderSize)
	for idx := 0; ; idx++ {
		if _, err := f.ReadAt(chb, off); err != nil {
			return 0, fmt.Errorf("%s: truncated at offset %d (no last chunk): %w", filepath.Base(f.Name()), off, ErrCorrupt)
		}
		ch := parseChunkHeader(chb)
		if ch.stored > maxStored || off+chunkHeaderSize+int64(ch.stored) > st.Size() {
			return 0, fmt.Errorf("%s: chunk %d at offset %d: %w", filepath.Base(f.Name()), idx, off, ErrCorrupt)
		}
		off += chunkHeaderSize + int64(ch.stored)
		plain += int64(ch.plain)
		if ch.flags&chunkLast != 0 {
			return plain, nil
		}
	}
}
