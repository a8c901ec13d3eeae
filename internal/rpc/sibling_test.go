package rpc

import (
	"os"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// TestPeekLeavesRequest: the server looks at a request before taking it
// (a RESTORE with rst_sibling is served by the restorer it starts, which
// must find the request still on the socket); peek consumes nothing, and
// a packet that does not decode is left for recv to refuse.
func TestPeekLeavesRequest(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	srv := os.NewFile(uintptr(fds[1]), "srv")
	defer srv.Close()
	c, err := newConn(srv)
	if err != nil {
		t.Fatal(err)
	}
	req := &rpc.CriuReq{Type: rpc.CriuReqType_RESTORE.Enum(), Opts: &rpc.CriuOpts{RstSibling: proto.Bool(true), ImagesDirFd: proto.Int32(-1)}}
	b, err := req.MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(fds[0], b); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(fds[0], []byte{0xff, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		p := c.peek()
		if p.GetType() != rpc.CriuReqType_RESTORE || !p.GetOpts().GetRstSibling() {
			t.Fatalf("peek %d: %v", i, p)
		}
	}
	got, err := c.recv()
	if err != nil || got.GetType() != rpc.CriuReqType_RESTORE || !got.GetOpts().GetRstSibling() {
		t.Fatalf("recv after peek: %v, %v", got, err)
	}
	if p := c.peek(); p != nil {
		t.Errorf("peek of a malformed packet: %v, want nil", p)
	}
	if _, err := c.recv(); err == nil {
		t.Errorf("recv of a malformed packet: no error")
	}
}
