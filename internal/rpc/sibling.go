package rpc

import (
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/puppet"
)

// SplitExit is Serve's error when this process split for a sibling
// restore (puppet.Split) and the restorer it started ended before taking
// it: `criu swrk` exits with that status, the restorer's.
type SplitExit int

func (e SplitExit) Error() string {
	return fmt.Sprintf("rpc: the restorer of the sibling restore exited with status %d", int(e))
}

// splitForSibling is called before each request is taken: a RESTORE with
// rst_sibling (the client's child is the root, and its only new child,
// as with criu) is served by a restorer this process starts, which finds
// the request still on the socket; this process becomes the puppet the
// root is cloned from (puppet.Split) and, when it returns, the restorer
// has ended without taking it. A connection of `service`, whose client is
// not the parent, and the restorer itself never split.
func (s *server) splitForSibling() error {
	if s.service || puppet.Restorer() {
		return nil
	}
	req := s.c.peek()
	if req.GetType() != rpc.CriuReqType_RESTORE || !req.GetOpts().GetRstSibling() {
		return nil
	}
	code, err := puppet.Split(os.Args)
	if err != nil {
		return fmt.Errorf("rpc: RESTORE with rst_sibling: %w", err)
	}
	return SplitExit(code)
}

// peek decodes the next request without taking it off the socket: nil
// when there is none or it does not decode (recv then says why).
func (c *conn) peek() *rpc.CriuReq {
	n, _, err := linux.Recvfrom(c.fd, nil, unix.MSG_PEEK|unix.MSG_TRUNC)
	if err != nil || n == 0 || n > maxMessage {
		return nil
	}
	buf := make([]byte, n)
	if n, _, err = linux.Recvfrom(c.fd, buf, unix.MSG_PEEK); err != nil {
		return nil
	}
	req := &rpc.CriuReq{}
	if req.UnmarshalVT(buf[:n]) != nil {
		return nil
	}
	return req
}
