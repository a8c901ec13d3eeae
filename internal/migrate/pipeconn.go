package migrate

import (
	"errors"
	"io"
	"net"
	"time"
)

// PipeConn makes a net.Conn of a pair of pipes (the stdin and stdout of
// `ssh host stasis migrate-receive --stdio`, on both sides); deadlines
// are not supported and ignored.
func PipeConn(r io.ReadCloser, w io.WriteCloser) net.Conn { return &pipeConn{r: r, w: w} }

type pipeConn struct {
	r io.ReadCloser
	w io.WriteCloser
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

func (p *pipeConn) Read(b []byte) (int, error)  { return p.r.Read(b) }
func (p *pipeConn) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p *pipeConn) Close() error                { return errors.Join(p.w.Close(), p.r.Close()) }
func (p *pipeConn) LocalAddr() net.Addr         { return pipeAddr{} }
func (p *pipeConn) RemoteAddr() net.Addr        { return pipeAddr{} }
func (p *pipeConn) SetDeadline(time.Time) error { return nil }
func (p *pipeConn) SetReadDeadline(time.Time) error {
	return nil
}
func (p *pipeConn) SetWriteDeadline(time.Time) error { return nil }
