package pagesrv

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"syscall"
	"time"
)

// Lazy pages over the page server protocol (criu's PS_IOV_GET): the
// lazy-pages daemon of a lazy restore asks the page server of a lazy
// dump for the pages of a process, a run at a time; the server answers
// each request with an ADD_F header (the pages it has from there, maybe
// fewer than asked) and the pages. CLOSE ends the session as for a dump.

// maxGet bounds the pages one request may ask for (criu's daemon asks at
// most 4 MiB).
const maxGet = 16 << 20 / pageSize

// LazySource is what a lazy page server serves: the pages of the
// processes of a lazy dump, by their pid in the images.
type LazySource interface {
	// ReadPages reads into buf (whole pages) the pages of process pid
	// from vaddr on, as far as they run contiguously in its lazy pages,
	// and returns how many it read: 0 if vaddr is no lazy page of pid.
	ReadPages(pid int, vaddr uint64, buf []byte) (int, error)
}

// LazyStats are the figures of a lazy page server's session.
type LazyStats struct {
	Requests, Pages uint64
	First, Last     time.Time // the first and the last request
}

// ServeLazy serves the page requests of one lazy-pages daemon on c from
// src until it closes the session. A daemon that goes away before it
// closes it fails the session (ErrNotFlushed): its restore misses pages.
func ServeLazy(c net.Conn, src LazySource, log *slog.Logger) (LazyStats, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	var st LazyStats
	r := bufio.NewReader(c)
	buf := make([]byte, maxGet*pageSize)
	for {
		v, err := readIov(r)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = ErrNotFlushed
			}
			return st, fmt.Errorf("lazy page server, session from %s (%d pages served): %w", c.RemoteAddr(), st.Pages, err)
		}
		switch cmd := v.Cmd & cmdMask; cmd {
		case cmdGet:
			if st.Requests == 0 {
				st.First = time.Now()
			}
			st.Requests++
			if v.NrPages == 0 || v.Vaddr%pageSize != 0 {
				return st, fmt.Errorf("lazy page server: %w: request for %d pages at %#x", ErrProtocol, v.NrPages, v.Vaddr)
			}
			pid := int(v.DstID)
			n, err := src.ReadPages(pid, v.Vaddr, buf[:min(v.NrPages, maxGet)*pageSize])
			if err != nil {
				return st, fmt.Errorf("lazy page server: pages of pid %d at %#x: %w", pid, v.Vaddr, err)
			}
			if n == 0 {
				return st, fmt.Errorf("lazy page server: %w: pid %d has no lazy page at %#x", ErrProtocol, pid, v.Vaddr)
			}
			hdr := iov{Cmd: pePresent<<cmdBits | cmdAddF, NrPages: uint64(n), Vaddr: v.Vaddr, DstID: v.DstID}
			if _, err := (&net.Buffers{hdr.marshal(), buf[:n*pageSize]}).WriteTo(c); err != nil {
				return st, fmt.Errorf("lazy page server, session from %s: %w", c.RemoteAddr(), err)
			}
			st.Pages += uint64(n)
			st.Last = time.Now()
		case cmdClose, cmdForceClose:
			if _, err := c.Write(make([]byte, 4)); err != nil {
				return st, err
			}
			if cmd == cmdClose {
				// The daemon closes first: no TIME_WAIT here (as criu).
				var b [1]byte
				if n, _ := r.Read(b[:]); n != 0 {
					return st, fmt.Errorf("lazy page server: %w: data after the session was closed", ErrProtocol)
				}
			}
			log.Info("lazy page server: session closed", "requests", st.Requests, "pages", st.Pages)
			return st, nil
		default:
			return st, fmt.Errorf("lazy page server: %w: command %#x (a lazy dump only serves page requests)", ErrProtocol, v.Cmd)
		}
	}
}

// LazyClient is a lazy-pages daemon's connection to the page server of a
// lazy dump (criu lazy-pages --page-server).
type LazyClient struct {
	conn net.Conn
	r    *bufio.Reader
	addr string
}

// DialLazy connects to the lazy page server at addr (host:port).
func DialLazy(addr string) (*LazyClient, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect to page server %s: %w", addr, err)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	return &LazyClient{conn: c, r: bufio.NewReaderSize(c, 1<<20), addr: addr}, nil
}

// Get asks for the pages of process pid (its pid in the images) from
// vaddr, len(buf) bytes' worth, and reads what the server has from there
// into buf; it returns the pages read (at least one).
func (c *LazyClient) Get(pid int, vaddr uint64, buf []byte) (int, error) {
	nr := uint64(len(buf) / pageSize)
	if _, err := c.conn.Write(iov{Cmd: cmdGet, NrPages: nr, Vaddr: vaddr, DstID: uint64(pid)}.marshal()); err != nil {
		return 0, c.fail(err)
	}
	v, err := readIov(c.r)
	if err != nil {
		return 0, c.fail(err)
	}
	if v.Cmd&cmdMask != cmdAddF || v.NrPages == 0 || v.NrPages > nr || v.Vaddr != vaddr || v.DstID != uint64(pid) {
		return 0, c.fail(fmt.Errorf("%w: asked %d pages of pid %d at %#x, got command %#x for %d pages of %#x at %#x",
			ErrProtocol, nr, pid, vaddr, v.Cmd, v.NrPages, v.DstID, v.Vaddr))
	}
	if _, err := io.ReadFull(c.r, buf[:v.NrPages*pageSize]); err != nil {
		return 0, c.fail(err)
	}
	return int(v.NrPages), nil
}

func (c *LazyClient) fail(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.ErrClosedPipe) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
		return fmt.Errorf("page server %s: %w (%v)", c.addr, ErrClosed, err)
	}
	return fmt.Errorf("page server %s: %w", c.addr, err)
}

// Close ends the session: the server answers, then the connection is
// closed from here (criu's disconnect_from_page_server).
func (c *LazyClient) Close() error {
	defer c.conn.Close()
	if _, err := c.conn.Write(iov{Cmd: cmdClose}.marshal()); err != nil {
		return c.fail(err)
	}
	var b [4]byte
	if _, err := io.ReadFull(c.r, b[:]); err != nil {
		return c.fail(fmt.Errorf("no answer to close: %w", err))
	}
	if st := int32(binary.LittleEndian.Uint32(b[:])); st != 0 {
		return c.fail(fmt.Errorf("%w: the server ended with status %d", ErrProtocol, st))
	}
	return nil
}

// Abort drops the connection without closing the session.
func (c *LazyClient) Abort() { c.conn.Close() }
