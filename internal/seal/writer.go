package seal

import (
	"fmt"
	"io"
	"runtime"
)

// Writer seals what is written to it onto an underlying writer, a chunk
// at a time, sealing up to a chunk per core in parallel and writing them
// in order. Flush ends the current chunk early (a request of a protocol
// must go out whole); Close writes the last chunk. It is used by one
// goroutine at a time.
type Writer struct {
	w       io.Writer
	c       *codec
	started bool
	buf     []byte
	index   uint64
	queue   []chan []byte
	sem     chan struct{}
	err     error
	closed  bool
	// Plain and Stored count the bytes written to the Writer and those
	// it wrote (headers included): the compression ratio.
	Plain, Stored int64
}

// NewWriter starts sealed data named name (a file's base name, or a
// stream's label: a reader must give the same) on w.
func NewWriter(w io.Writer, name string, o Options) (*Writer, error) {
	h, err := newHeader(o)
	if err != nil {
		return nil, err
	}
	c, err := newCodec(name, h, o.Key)
	if err != nil {
		return nil, err
	}
	n := runtime.GOMAXPROCS(0)
	return &Writer{w: w, c: c, buf: make([]byte, 0, h.chunk), sem: make(chan struct{}, n)}, nil
}

func (s *Writer) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n := 0
	for len(p) > 0 {
		k := copy(s.buf[len(s.buf):cap(s.buf)], p)
		s.buf = s.buf[:len(s.buf)+k]
		p, n = p[k:], n+k
		if len(s.buf) == cap(s.buf) {
			if err := s.emit(false); err != nil {
				return n, err
			}
		}
	}
	s.Plain += int64(n)
	return n, nil
}

// emit hands the buffered chunk to a worker.
func (s *Writer) emit(last bool) error {
	plain := s.buf
	s.buf = make([]byte, 0, s.c.h.chunk)
	res := make(chan []byte, 1)
	s.queue = append(s.queue, res)
	index := s.index
	s.index++
	s.sem <- struct{}{}
	go func() {
		res <- s.c.seal(index, plain, last)
		<-s.sem
	}()
	return s.drain(cap(s.sem) * 2)
}

// drain writes the sealed chunks in order until at most keep wait.
func (s *Writer) drain(keep int) error {
	if !s.started {
		s.started = true
		if err := s.put(s.c.hdr); err != nil {
			return err
		}
	}
	for len(s.queue) > 0 {
		var b []byte
		if len(s.queue) > keep {
			b = <-s.queue[0]
		} else {
			select {
			case b = <-s.queue[0]:
			default:
				return s.err
			}
		}
		s.queue = s.queue[1:]
		if err := s.put(b); err != nil {
			return err
		}
	}
	return s.err
}

func (s *Writer) put(b []byte) error {
	if s.err != nil {
		return s.err
	}
	if _, err := s.w.Write(b); err != nil {
		s.err = fmt.Errorf("%s: %w", s.c.name, err)
		return s.err
	}
	s.Stored += int64(len(b))
	return nil
}

// Flush seals what is buffered as a chunk of its own and writes every
// chunk out.
func (s *Writer) Flush() error {
	if s.err != nil {
		return s.err
	}
	if len(s.buf) > 0 {
		if err := s.emit(false); err != nil {
			return err
		}
	}
	return s.drain(0)
}

// Close writes the last chunk (flagged, so that a reader sees a
// truncation); it does not close the underlying writer.
func (s *Writer) Close() error {
	if s.closed {
		return s.err
	}
	s.closed = true
	if s.err != nil {
		for _, q := range s.queue {
			<-q
		}
		return s.err
	}
	if err := s.emit(true); err != nil {
		return err
	}
	return s.drain(0)
}
