package seal

import (
	"bufio"
	"fmt"
	"net"
	"time"
)

// streamChunk is the chunk size of connections: a protocol's buffered
// writes of a few MiB are sealed by several cores at once.
const streamChunk = 256 << 10

// Conn is a connection whose both directions are sealed; each Write goes
// out whole (a protocol's request must reach the other side before it
// waits for the answer).
type Conn struct {
	net.Conn
	r *Reader
	w *Writer
}

// Client seals c from its first byte: what it sends is named out, what
// it receives in (the server names them the other way round).
func Client(c net.Conn, out, in string, o Options) (*Conn, error) {
	o.Chunk = streamChunk
	w, err := NewWriter(c, out, o)
	if err != nil {
		return nil, err
	}
	return &Conn{Conn: c, r: NewReader(c, in, o.Key), w: w}, nil
}

// Detect tells whether the next bytes of br are sealed data.
func Detect(br *bufio.Reader) bool {
	b, err := br.Peek(len(Magic))
	return err == nil && string(b) == Magic
}

// Server is the other end of Client on c, whose reads go through br (the
// peeked header tells how the client sealed; the answers are sealed the
// same way).
func Server(c net.Conn, br *bufio.Reader, in, out string, key []byte) (*Conn, error) {
	b, err := br.Peek(headerSize)
	if err != nil {
		return nil, fmt.Errorf("%s: truncated at offset 0: %w", in, ErrCorrupt)
	}
	h, err := parseHeader(b)
	if err != nil {
		return nil, fmt.Errorf("%s: offset 0: %w", in, err)
	}
	o := Options{Compress: h.flags&flagCompress != 0, Chunk: streamChunk}
	if h.flags&flagEncrypt != 0 {
		if key == nil {
			return nil, fmt.Errorf("%s: %w", in, ErrNoKey)
		}
		o.Key = key
	}
	w, err := NewWriter(c, out, o)
	if err != nil {
		return nil, err
	}
	return &Conn{Conn: c, r: NewReader(br, in, key), w: w}, nil
}

func (c *Conn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *Conn) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if err != nil {
		return n, err
	}
	return n, c.w.Flush()
}

// Close ends the sealed stream (its last chunk) and closes c.
func (c *Conn) Close() error {
	// The peer may have stopped reading: the last chunk is a courtesy.
	_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	_ = c.w.Close()
	return c.Conn.Close()
}

// Sent and Wire are the plain and sealed bytes sent so far.
func (c *Conn) Sent() (plain, wire int64) { return c.w.Plain, c.w.Stored }
