package pagesrv

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/mem"
	"github.com/stasis-cr/stasis/internal/seal"
)

// firstPagesID numbers the server's pages images above the dump's own
// (criu's up_page_ids_base): both may end up in one dir.
const firstPagesID = 0x10001

// session is one dump's session, writing into dir.
type session struct {
	dir    *images.Dir
	r      *bufio.Reader
	w      net.Conn
	log    *slog.Logger
	nextID int
	cur    *mem.ImagesXfer
	curDst uint64
	open   bool
	stats  Stats
}

// Stats are the figures of one session.
type Stats struct {
	Pagemaps, Pages, InParent uint64
}

// Serve runs one session of a dump on c, writing the pagemaps and pages
// it sends into the images dir at path, until the dump closes it. On any
// failure (a connection dropped before the dump closed the session
// included) what the session wrote is removed. inherited: c is criu's
// --ps-socket, whose other end may stay open after the session.
func Serve(c net.Conn, path string, inherited bool, log *slog.Logger) (Stats, error) {
	return ServeKey(c, path, inherited, nil, log)
}

// ServeKey is Serve that also takes a stream sealed by a stasis dump
// (--compress, --encrypt with key).
func ServeKey(c net.Conn, path string, inherited bool, key []byte, log *slog.Logger) (Stats, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := images.Open(path)
	if err != nil {
		return Stats{}, fmt.Errorf("page server: %w", err)
	}
	s := &session{dir: dir, r: bufio.NewReaderSize(c, 1<<20), w: c, log: log, nextID: firstPagesID}
	if seal.Detect(s.r) {
		sc, err := seal.Server(c, s.r, LabelToServer, LabelToDump, key)
		if err != nil {
			return Stats{}, fmt.Errorf("page server session from %s: %w", c.RemoteAddr(), err)
		}
		s.r, s.w = bufio.NewReaderSize(sc, 1<<20), sc
	}
	err = s.run(inherited)
	if s.cur != nil {
		s.cur.Abort()
	}
	if err != nil {
		if n, rerr := dir.RemoveWritten(); rerr != nil {
			err = fmt.Errorf("%w (and removing what it wrote: %v)", err, rerr)
		} else if n > 0 {
			err = fmt.Errorf("%w (the %d files it wrote were removed)", err, n)
		}
		return s.stats, fmt.Errorf("page server session from %s: %w", c.RemoteAddr(), err)
	}
	return s.stats, nil
}

func (s *session) run(inherited bool) error {
	for {
		v, err := readIov(s.r)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return ErrNotFlushed
			}
			return err
		}
		switch cmd := v.Cmd & cmdMask; cmd {
		case cmdOpen, cmdOpen2:
			has, err := s.openPagemap(v.DstID)
			if err != nil {
				return err
			}
			if cmd == cmdOpen2 {
				b := byte(0)
				if has {
					b = 1
				}
				if _, err := s.w.Write([]byte{b}); err != nil {
					return err
				}
			}
		case cmdParent:
			name, err := pagemapName(v.DstID)
			if err != nil {
				return err
			}
			var b [4]byte
			if s.hasParent(name) {
				binary.LittleEndian.PutUint32(b[:], 1)
			}
			if _, err := s.w.Write(b[:]); err != nil {
				return err
			}
		case cmdAddF, cmdAdd, cmdHole:
			flags := v.Cmd >> cmdBits
			switch cmd {
			case cmdAdd:
				flags = pePresent
			case cmdHole:
				flags = peParent
			}
			if err := s.add(v, flags); err != nil {
				return err
			}
		case cmdClose, cmdForceClose:
			if err := s.closePagemap(); err != nil {
				return err
			}
			if _, err := s.w.Write(make([]byte, 4)); err != nil {
				return err
			}
			if cmd == cmdClose && !inherited {
				// The dump closes first: no TIME_WAIT here (as criu).
				var b [1]byte
				if n, _ := s.r.Read(b[:]); n != 0 {
					return fmt.Errorf("%w: data after the session was closed", ErrProtocol)
				}
			}
			return nil
		case cmdGet:
			return ErrLazy
		default:
			return fmt.Errorf("%w: unknown command %#x", ErrProtocol, v.Cmd)
		}
	}
}

func (s *session) hasParent(name string) bool {
	return (&images.Dir{Path: filepath.Join(s.dir.Path, mem.ParentLink)}).Has(name)
}

func (s *session) openPagemap(dst uint64) (bool, error) {
	if err := s.closePagemap(); err != nil {
		return false, err
	}
	name, err := pagemapName(dst)
	if err != nil {
		return false, err
	}
	x, err := mem.NewPagemapXfer(s.dir, name, s.nextID)
	if err != nil {
		return false, err
	}
	s.log.Debug("page server: pagemap", "name", name, "pages id", s.nextID)
	s.nextID++
	s.cur, s.curDst, s.open = x, dst, true
	s.stats.Pagemaps++
	return s.hasParent(name), nil
}

func (s *session) closePagemap() error {
	if !s.open {
		return nil
	}
	s.open = false
	err := s.cur.Close()
	s.cur = nil
	return err
}

func (s *session) add(v iov, flags uint32) error {
	if !s.open || s.curDst != v.DstID {
		// criu: "Deprecated IO w/o open".
		if _, err := s.openPagemap(v.DstID); err != nil {
			return err
		}
	}
	if v.NrPages == 0 || v.NrPages > 1<<40/pageSize || v.Vaddr%pageSize != 0 {
		return fmt.Errorf("%w: entry %#x + %d pages", ErrProtocol, v.Vaddr, v.NrPages)
	}
	e := &pagemap.PagemapEntry{Vaddr: proto.Uint64(v.Vaddr), CompatNrPages: proto.Uint32(0), NrPages: proto.Uint64(v.NrPages), Flags: proto.Uint32(flags)}
	if err := s.cur.Add(e); err != nil {
		return err
	}
	if flags&pePresent == 0 {
		s.stats.InParent += v.NrPages
		return nil
	}
	if _, err := io.CopyN(s.cur, s.r, int64(v.NrPages*pageSize)); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("pages %#x + %d: %w", v.Vaddr, v.NrPages, ErrNotFlushed)
		}
		return err
	}
	s.stats.Pages += v.NrPages
	return nil
}
