package rpc

import (
	"errors"
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// orphanPtsMaster is a RESTORE's orphan_pts_master: the new master of a
// pty slave whose master was outside the tree (a container's console)
// goes to the client in the "orphan-pts-master" notification, the fd in
// SCM_RIGHTS, as criu sends it (no pid), and the restore waits for the
// client's answer. criu sends it through its notification channel only:
// without notify_scripts the restore fails.
func (s *server) orphanPtsMaster(o *rpc.CriuOpts) (func(*os.File) error, error) {
	if !o.GetOrphanPtsMaster() {
		return nil, nil
	}
	if !o.GetNotifyScripts() {
		return nil, fmt.Errorf("rpc: orphan_pts_master without notify_scripts: the master is sent in a notification: %w", ErrBadRequest)
	}
	n := &notifier{c: s.c}
	return func(master *os.File) error {
		_, err := n.notifyFd("orphan-pts-master", master)
		return err
	}, nil
}

// notifyFd is notify with f passed along (SCM_RIGHTS).
func (n *notifier) notifyFd(script string, f *os.File) (*rpc.CriuReq, error) {
	resp := success(rpc.CriuReqType_NOTIFY)
	resp.Notify = &rpc.CriuNotify{Script: proto.String(script)}
	if err := n.c.sendFd(resp, f); err != nil {
		return nil, fmt.Errorf("notify %s: %w", script, err)
	}
	ack, err := n.c.recv()
	if err != nil {
		return nil, fmt.Errorf("notify %s: no answer from the client: %w", script, err)
	}
	if ack.GetType() != rpc.CriuReqType_NOTIFY || !ack.GetNotifySuccess() {
		return nil, fmt.Errorf("notify %s: answer %v, notify_success %v: %w", script, ack.GetType(), ack.GetNotifySuccess(), ErrScript)
	}
	return ack, nil
}

// sendFd is send with one fd in SCM_RIGHTS, in the same packet.
func (c *conn) sendFd(resp *rpc.CriuResp, f *os.File) error {
	b, err := resp.MarshalVT()
	if err != nil {
		return fmt.Errorf("rpc: encode %v: %w", resp.GetType(), err)
	}
	for {
		err = unix.Sendmsg(c.fd, b, unix.UnixRights(int(f.Fd())), nil, unix.MSG_NOSIGNAL)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("rpc: send %v with fd %d: %w", resp.GetType(), f.Fd(), os.NewSyscallError("sendmsg", err))
	}
	return nil
}
