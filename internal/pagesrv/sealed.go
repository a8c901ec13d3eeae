package pagesrv

import (
	"bufio"
	"io"
	"net"
)

// Labels of the two directions of a sealed page server stream (stasis'
// --compress/--encrypt on the wire; a criu end never sees one).
const (
	LabelToServer = "stasis page server stream to the server"
	LabelToDump   = "stasis page server stream to the dump"
)

// NewClient is a session on c, connected already (through TLS, sealed)
// to the page server at addr.
func NewClient(c net.Conn, addr string) *Client { return newClient(c, addr, false) }

// NewTLSClient is NewClient on a TLS connection to a page server that
// may be criu's: commands and their pages go in TLS records of their own.
func NewTLSClient(c net.Conn, addr string) *Client {
	cl := newClient(c, addr, false)
	cl.records = true
	cl.rec = &recWriter{w: c}
	cl.w = bufio.NewWriterSize(cl.rec, 1<<20)
	return cl
}

// tlsRecord is the payload of a full TLS record.
const tlsRecord = 16 << 10

// recWriter writes to a TLS connection in whole records, counted from
// the last flush: the pages of a command fill records that never cross
// a 64 KiB boundary of them (criu's TLS page server receives a chunk of
// its pipe's size at a time, in whole records).
type recWriter struct {
	w   io.Writer
	buf [tlsRecord]byte
	n   int
}

func (r *recWriter) Write(p []byte) (int, error) {
	done := 0
	for len(p) > 0 {
		k := copy(r.buf[r.n:], p)
		r.n += k
		p = p[k:]
		done += k
		if r.n == len(r.buf) {
			if err := r.flush(); err != nil {
				return done, err
			}
		}
	}
	return done, nil
}

func (r *recWriter) flush() error {
	if r.n == 0 {
		return nil
	}
	_, err := r.w.Write(r.buf[:r.n])
	r.n = 0
	return err
}
