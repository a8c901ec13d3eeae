package pagesrv

import (
	"errors"
	"fmt"

	"github.com/stasis-cr/stasis/internal/linux"
)

var (
	// ErrProtocol is wrapped when the other side sends what the
	// protocol does not allow.
	ErrProtocol = errors.New("page server protocol error")
	// ErrNotFlushed: the dump went away before it closed the session;
	// what it sent is removed.
	ErrNotFlushed = errors.New("the connection ended before the dump closed the session")
	// ErrLazy is wrapped for PS_IOV_GET (lazy pages).
	ErrLazy = fmt.Errorf("page requests of a lazy restore (PS_IOV_GET) %w", linux.ErrNotSupported)
)
