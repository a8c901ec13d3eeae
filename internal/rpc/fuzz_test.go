package rpc

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// FuzzRequest: whatever packet a client sends, the server replies with
// one message that decodes (or closes, for keep_open where criu does) and
// never panics. The backend does nothing: no process is touched.
func FuzzRequest(f *testing.F) {
	seeds := []*rpc.CriuReq{
		{Type: rpc.CriuReqType_VERSION.Enum()},
		{Type: rpc.CriuReqType_FEATURE_CHECK.Enum(), Features: &rpc.CriuFeatures{MemTrack: proto.Bool(true)}},
		{Type: rpc.CriuReqType_DUMP.Enum(), Opts: &rpc.CriuOpts{ImagesDirFd: proto.Int32(-1), ImagesDir: proto.String("/nonexistent"), Pid: proto.Int32(1)}},
		{Type: rpc.CriuReqType_RESTORE.Enum(), Opts: &rpc.CriuOpts{ImagesDirFd: proto.Int32(0), InheritFd: []*rpc.InheritFd{{Key: proto.String("k"), Fd: proto.Int32(99)}}}},
		{Type: rpc.CriuReqType_WAIT_PID.Enum(), Pid: proto.Uint32(1)},
	}
	for _, s := range seeds {
		b, err := s.MarshalVT()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	b := Backend{
		Dump:    func(context.Context, DumpRequest) error { return errors.New("fuzz: no dump") },
		Restore: func(context.Context, RestoreRequest) (int, error) { return 0, errors.New("fuzz: no restore") },
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return // an empty packet reads as the client closing
		}
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fds[0])
		srv := os.NewFile(uintptr(fds[1]), "srv")
		done := make(chan error, 1)
		go func() { done <- Serve(context.Background(), srv, b); srv.Close() }()
		if _, err := unix.Write(fds[0], data); err != nil {
			t.Skip(err)
		}
		// A notification never comes: the backend sends none. Closing our
		// write side ends a keep_open loop.
		buf := make([]byte, 1<<16)
		n, err := unix.Read(fds[0], buf)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			var r rpc.CriuResp
			if err := r.UnmarshalVT(buf[:n]); err != nil {
				t.Fatalf("reply does not decode: %v", err)
			}
		}
		unix.Shutdown(fds[0], unix.SHUT_WR)
		<-done
	})
}
