package rpc

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/kerndat"
)

// pair serves one end of a SOCK_SEQPACKET socketpair and returns the
// other, and Serve's result when it is done.
func pair(t *testing.T, b Backend) (int, <-chan error) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	srv := os.NewFile(uintptr(fds[1]), "srv")
	go func() { done <- Serve(context.Background(), srv, b); srv.Close() }()
	t.Cleanup(func() { unix.Close(fds[0]) })
	return fds[0], done
}

func roundTrip(t *testing.T, fd int, req *rpc.CriuReq) *rpc.CriuResp {
	t.Helper()
	b, err := req.MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	return send(t, fd, b)
}

func send(t *testing.T, fd int, b []byte) *rpc.CriuResp {
	t.Helper()
	if _, err := unix.Write(fd, b); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8192)
	n, err := unix.Read(fd, buf)
	if err != nil || n == 0 {
		t.Fatalf("read reply: %d, %v", n, err)
	}
	r := &rpc.CriuResp{}
	if err := r.UnmarshalVT(buf[:n]); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestKeepOpenVersionFeatures(t *testing.T) {
	fd, done := pair(t, Backend{})
	r := roundTrip(t, fd, &rpc.CriuReq{Type: rpc.CriuReqType_VERSION.Enum(), KeepOpen: proto.Bool(true)})
	if !r.GetSuccess() || r.GetVersion().GetMajorNumber() != 4 || r.GetVersion().GetMinorNumber() != 2 || r.GetVersion().Gitid != nil {
		t.Errorf("VERSION: %v", r)
	}
	r = roundTrip(t, fd, &rpc.CriuReq{Type: rpc.CriuReqType_FEATURE_CHECK.Enum(), Features: &rpc.CriuFeatures{LazyPages: proto.Bool(true)}})
	f := r.GetFeatures()
	lazy, _, _ := kerndat.CRIUFeature("uffd-noncoop")
	if !r.GetSuccess() || f.MemTrack == nil || f.LazyPages == nil || f.PidfdStore == nil || f.GetLazyPages() != lazy {
		t.Errorf("FEATURE_CHECK: %v", r)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

func TestBadRequests(t *testing.T) {
	tmp := t.TempDir()
	for _, tc := range []struct {
		name string
		raw  []byte
		req  *rpc.CriuReq
		want rpc.CriuReqType
		msg  string
		err  error
	}{
		{name: "unknown type", req: &rpc.CriuReq{Type: rpc.CriuReqType(42).Enum()}, want: rpc.CriuReqType_EMPTY, msg: "invalid request type 42", err: ErrBadRequest},
		{name: "notify out of turn", req: &rpc.CriuReq{Type: rpc.CriuReqType_NOTIFY.Enum()}, want: rpc.CriuReqType_EMPTY, msg: "invalid request type 6", err: ErrBadRequest},
		{name: "malformed", raw: []byte{0xff, 0xff, 0xff}, want: rpc.CriuReqType_EMPTY, msg: "malformed", err: ErrBadRequest},
		{name: "no type", raw: []byte{0x18, 0x01}, want: rpc.CriuReqType_EMPTY, msg: "malformed", err: ErrBadRequest},
		{name: "dump without opts", req: &rpc.CriuReq{Type: rpc.CriuReqType_DUMP.Enum()}, want: rpc.CriuReqType_DUMP, msg: "without options", err: ErrFailed},
		{name: "dump of the client", req: &rpc.CriuReq{Type: rpc.CriuReqType_DUMP.Enum(), Opts: &rpc.CriuOpts{ImagesDirFd: proto.Int32(-1)}}, want: rpc.CriuReqType_DUMP, msg: "without a pid", err: ErrFailed},
		{name: "iptables", req: &rpc.CriuReq{Type: rpc.CriuReqType_RESTORE.Enum(), Opts: &rpc.CriuOpts{ImagesDirFd: proto.Int32(-1), ImagesDir: proto.String(tmp), NetworkLock: rpc.CriuNetworkLockMethod_IPTABLES.Enum()}}, want: rpc.CriuReqType_RESTORE, msg: "network_lock IPTABLES", err: ErrFailed},
		{name: "restore with dump options", req: &rpc.CriuReq{Type: rpc.CriuReqType_RESTORE.Enum(), Opts: &rpc.CriuOpts{ImagesDirFd: proto.Int32(-1), ImagesDir: proto.String(tmp), LeaveRunning: proto.Bool(true), Ps: &rpc.CriuPageServerInfo{}}}, want: rpc.CriuReqType_RESTORE, msg: "option leave_running, ps: not implemented", err: ErrFailed},
		{name: "wait without pid", req: &rpc.CriuReq{Type: rpc.CriuReqType_WAIT_PID.Enum()}, want: rpc.CriuReqType_WAIT_PID, msg: "without a pid", err: nil}, // criu exits 0
		{name: "cpuinfo without opts", req: &rpc.CriuReq{Type: rpc.CriuReqType_CPUINFO_CHECK.Enum()}, want: rpc.CriuReqType_CPUINFO_CHECK, msg: "without options", err: ErrFailed},
		{name: "cpuinfo without image", req: &rpc.CriuReq{Type: rpc.CriuReqType_CPUINFO_CHECK.Enum(), Opts: &rpc.CriuOpts{ImagesDirFd: proto.Int32(-1), ImagesDir: proto.String(tmp)}}, want: rpc.CriuReqType_CPUINFO_CHECK, msg: "no cpuinfo image", err: ErrFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fd, done := pair(t, Backend{})
			var r *rpc.CriuResp
			if tc.req != nil {
				r = roundTrip(t, fd, tc.req)
			} else {
				r = send(t, fd, tc.raw)
			}
			if r.GetSuccess() || r.GetType() != tc.want || !strings.Contains(r.GetCrErrmsg(), tc.msg) {
				t.Errorf("reply %v, want a %v failure saying %q", r, tc.want, tc.msg)
			}
			if err := <-done; !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
				t.Errorf("Serve: %v, want %v", err, tc.err)
			}
		})
	}
}

func TestOpenLogNoSubdir(t *testing.T) {
	if _, _, err := openLog(&rpc.CriuOpts{LogFile: proto.String("../x.log")}, t.TempDir()); !errors.Is(err, ErrBadRequest) {
		t.Errorf("log_file with a '/': %v", err)
	}
}

func TestLongErrorFitsGoCriu(t *testing.T) {
	r := failure(rpc.CriuReqType_DUMP, errors.New(strings.Repeat("x", 100000)))
	b, err := r.MarshalVT()
	if err != nil || len(b) > 8192 {
		t.Errorf("failure reply of %d bytes (%v): go-criu reads 8192", len(b), err)
	}
}
