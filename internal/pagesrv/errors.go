package pagesrv

import (
	"errors"
	"fmt"

	"github.com/stasis-cr/stasis/internal/linux"
)

var (
	// ErrClosed: the page server closed the connection in the middle
	// of a lazy restore's requests.
	ErrClosed = errors.New("the page server closed the connection")
	// ErrProtocol is wrapped when the other side sends what the
	// protocol does not allow.
	ErrProtocol = errors.New("page server protocol error")
	// ErrNotFlushed: the dump went away before it closed the session;
	// what it sent is removed.
	ErrNotFlushed = errors.New("the connection ended before the dump closed the session")
	// ErrLazy is wrapped for PS_IOV_GET (lazy pages) sent to a page
	// server that receives a dump (criu's answers them only with
	// --lazy-pages).
	ErrLazy = fmt.Errorf("page requests of a lazy restore (PS_IOV_GET) to a page server that receives a dump: start it with --lazy-pages, or serve from the lazy dump itself; %w", linux.ErrNotSupported)
)
