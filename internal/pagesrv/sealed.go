package pagesrv

import (
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
