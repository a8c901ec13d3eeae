package seal

import (
	"errors"
	"fmt"
	"io"
)

// Reader reads sealed data in order, checking each chunk: an error
// names the file or stream and the offset of the chunk that failed.
type Reader struct {
	r    io.Reader
	name string
	key  []byte
	c    *codec
	off  int64 // of the next chunk
	idx  uint64
	cur  []byte
	done bool
	err  error
}

// NewReader reads sealed data named name (as the writer named it) from r;
// the header is read at the first Read.
func NewReader(r io.Reader, name string, key []byte) *Reader {
	return &Reader{r: r, name: name, key: key}
}

func (s *Reader) fail(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = fmt.Errorf("%s: truncated at offset %d (no last chunk): %w", s.name, s.off, ErrCorrupt)
	}
	s.err = err
	return err
}

func (s *Reader) Read(p []byte) (int, error) {
	for len(s.cur) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		if s.done {
			return 0, io.EOF
		}
		if err := s.next(); err != nil {
			return 0, s.fail(err)
		}
	}
	n := copy(p, s.cur)
	s.cur = s.cur[n:]
	return n, nil
}

func (s *Reader) next() error {
	if s.c == nil {
		b := make([]byte, headerSize)
		if _, err := io.ReadFull(s.r, b); err != nil {
			return err
		}
		h, err := parseHeader(b)
		if err != nil {
			return fmt.Errorf("%s: offset 0: %w", s.name, err)
		}
		if s.c, err = newCodec(s.name, h, s.key); err != nil {
			return err
		}
		s.off = headerSize
	}
	chb := make([]byte, chunkHeaderSize)
	if _, err := io.ReadFull(s.r, chb); err != nil {
		return err
	}
	ch := parseChunkHeader(chb)
	if ch.stored > maxStored || ch.plain > s.c.h.chunk {
		return fmt.Errorf("%s: chunk %d at offset %d: %d stored bytes for %d: %w", s.name, s.idx, s.off, ch.stored, ch.plain, ErrCorrupt)
	}
	stored := make([]byte, ch.stored)
	if _, err := io.ReadFull(s.r, stored); err != nil {
		return err
	}
	plain, err := s.c.open(s.idx, chb, stored, s.off)
	if err != nil {
		return err
	}
	s.cur, s.done = plain, ch.flags&chunkLast != 0
	s.off += chunkHeaderSize + int64(ch.stored)
	s.idx++
	return nil
}
