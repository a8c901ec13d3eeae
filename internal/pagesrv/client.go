package pagesrv

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"

	"github.com/stasis-cr/stasis/internal/mem"
)

// Client is a dump's session with a page server.
type Client struct {
	conn  net.Conn
	w     *bufio.Writer
	addr  string
	force bool // an inherited socket (--ps-socket): ask the server to end itself
	// records: each command, and each command's pages, goes out in TLS
	// records of its own (criu's TLS page server reads a command from
	// one record and writes whole records of pages to the image).
	records bool
	rec     *recWriter
}

// Dial connects to the page server at addr (host:port).
func Dial(addr string) (*Client, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect to page server %s: %w", addr, err)
	}
	return newClient(c, addr, false), nil
}

// FromFile uses an already connected socket (criu's --ps-socket).
func FromFile(f *os.File) (*Client, error) {
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("page server socket fd %d: %w", f.Fd(), err)
	}
	return newClient(c, fmt.Sprintf("fd %d", f.Fd()), true), nil
}

func newClient(c net.Conn, addr string, force bool) *Client {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	return &Client{conn: c, w: bufio.NewWriterSize(c, 1<<20), addr: addr, force: force}
}

func (c *Client) send(v iov) error {
	if c.records {
		if err := c.flush(); err != nil {
			return c.fail(err)
		}
	}
	if _, err := c.w.Write(v.marshal()); err != nil {
		return c.fail(err)
	}
	if c.records {
		if err := c.flush(); err != nil {
			return c.fail(err)
		}
	}
	return nil
}

// flush sends what is buffered, ending the current TLS record.
func (c *Client) flush() error {
	if err := c.w.Flush(); err != nil {
		return err
	}
	if c.rec != nil {
		return c.rec.flush()
	}
	return nil
}

func (c *Client) fail(err error) error {
	return fmt.Errorf("page server %s: %w", c.addr, err)
}

// answer flushes what is buffered and reads n bytes of answer.
func (c *Client) answer(n int) ([]byte, error) {
	if err := c.flush(); err != nil {
		return nil, c.fail(err)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c.conn, b); err != nil {
		return nil, c.fail(fmt.Errorf("no answer: %w", err))
	}
	return b, nil
}

// HasParent asks whether the server has a parent pagemap for imgPid.
func (c *Client) HasParent(imgPid int) (bool, error) {
	if err := c.send(iov{Cmd: cmdParent, DstID: pidDst(imgPid)}); err != nil {
		return false, err
	}
	b, err := c.answer(4)
	if err != nil {
		return false, err
	}
	return int32(binary.LittleEndian.Uint32(b)) > 0, nil
}

// Open starts the pagemap of imgPid on the server.
func (c *Client) Open(imgPid int) (mem.Xfer, error) {
	dst := pidDst(imgPid)
	if err := c.send(iov{Cmd: cmdOpen2, DstID: dst}); err != nil {
		return nil, err
	}
	if _, err := c.answer(1); err != nil {
		return nil, err
	}
	return &xfer{c: c, dst: dst}, nil
}

// Close ends the session: the server answers once it has stored all.
func (c *Client) Close() error {
	defer c.conn.Close()
	cmd := uint32(cmdClose)
	if c.force {
		cmd = cmdForceClose
	}
	if err := c.send(iov{Cmd: cmd}); err != nil {
		return err
	}
	b, err := c.answer(4)
	if err != nil {
		return err
	}
	if st := int32(binary.LittleEndian.Uint32(b)); st != 0 {
		return c.fail(fmt.Errorf("%w: the server ended with status %d", ErrProtocol, st))
	}
	c.shutdown()
	return nil
}

// shutdown ends the connection the way criu's dump does: our side of the
// stream first (TLS close_notify, then FIN), then the server's is read to
// its end before the socket is closed. Closed with the server's
// close_notify still unread, the socket would be reset, and criu's page
// server, which reads its socket to EOF once the session is over, exits
// 1 on the reset (a dump that had succeeded; seen under load).
func (c *Client) shutdown() {
	switch conn := c.conn.(type) {
	case *tls.Conn:
		if conn.CloseWrite() != nil {
			return
		}
		if tcp, ok := conn.NetConn().(*net.TCPConn); ok {
			_ = tcp.CloseWrite()
		}
	case *net.TCPConn:
		if conn.CloseWrite() != nil {
			return
		}
	default: // a sealed stream: its end is stasis', which needs none of this
		return
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(shutdownWait))
	_, _ = io.Copy(io.Discard, c.conn)
}

// shutdownWait bounds how long a dump waits for the page server to close
// its side after a successful session.
const shutdownWait = 5 * time.Second

// Abort drops the connection without closing the session: the server
// discards what it got.
func (c *Client) Abort() { c.conn.Close() }

// xfer sends one pagemap.
type xfer struct {
	c   *Client
	dst uint64
}

func (x *xfer) Add(e *pagemap.PagemapEntry) error {
	return x.c.send(iov{Cmd: e.GetFlags()<<cmdBits | cmdAddF, NrPages: mem.NrPages(e), Vaddr: e.GetVaddr(), DstID: x.dst})
}

func (x *xfer) Write(b []byte) (int, error) {
	n, err := x.c.w.Write(b)
	if err != nil {
		return n, x.c.fail(err)
	}
	return n, nil
}

func (x *xfer) Close() error { return nil }
