package rpc

import (
	"errors"
	"os"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// TestOrphanPtsMasterNotify: the master goes to the client in one packet
// with the notification, as criu sends it (script "orphan-pts-master",
// no pid, the fd in SCM_RIGHTS), and the restore waits for the answer.
func TestOrphanPtsMasterNotify(t *testing.T) {
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
	s := &server{c: c}
	if _, err := s.orphanPtsMaster(&rpc.CriuOpts{OrphanPtsMaster: proto.Bool(true)}); !errors.Is(err, ErrBadRequest) {
		t.Errorf("orphan_pts_master without notify_scripts: %v", err)
	}
	send, err := s.orphanPtsMaster(&rpc.CriuOpts{OrphanPtsMaster: proto.Bool(true), NotifyScripts: proto.Bool(true)})
	if err != nil || send == nil {
		t.Fatalf("orphanPtsMaster: %v", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	done := make(chan error, 1)
	go func() { done <- send(w) }()

	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(fds[0], buf, oob, 0)
	if err != nil {
		t.Fatal(err)
	}
	resp := &rpc.CriuResp{}
	if err := resp.UnmarshalVT(buf[:n]); err != nil {
		t.Fatal(err)
	}
	if resp.GetType() != rpc.CriuReqType_NOTIFY || resp.GetNotify().GetScript() != "orphan-pts-master" || resp.GetNotify().Pid != nil {
		t.Errorf("notification %v, want criu's orphan-pts-master without a pid", resp)
	}
	scms, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(scms) != 1 {
		t.Fatalf("control messages: %v %v", scms, err)
	}
	got, err := unix.ParseUnixRights(&scms[0])
	if err != nil || len(got) != 1 {
		t.Fatalf("rights: %v %v", got, err)
	}
	defer unix.Close(got[0])
	var a, b unix.Stat_t
	unix.Fstat(got[0], &a)
	unix.Fstat(int(w.Fd()), &b)
	if a.Ino != b.Ino {
		t.Errorf("received inode %d, sent %d", a.Ino, b.Ino)
	}
	select {
	case err := <-done:
		t.Fatalf("the notification returned before the answer: %v", err)
	default:
	}
	ack, _ := (&rpc.CriuReq{Type: rpc.CriuReqType_NOTIFY.Enum(), NotifySuccess: proto.Bool(false)}).MarshalVT()
	if _, err := unix.Write(fds[0], ack); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrScript) {
		t.Errorf("answer notify_success false: %v, want the script error", err)
	}
}
