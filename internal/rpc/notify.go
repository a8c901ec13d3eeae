package rpc

import (
	"fmt"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"google.golang.org/protobuf/proto"
)

// notifier sends criu's notifications (its action scripts) to the client
// and waits for each answer, when the request set notify_scripts.
type notifier struct {
	c *conn
}

// hook returns the Notify of a dump or restore: nil without
// notify_scripts, so that nothing is sent.
func (s *server) hook(o *rpc.CriuOpts, dump bool) func(string, int) error {
	if !o.GetNotifyScripts() {
		return nil
	}
	n := &notifier{c: s.c}
	return func(script string, pid int) error {
		if _, err := n.notify(script, pid); err != nil {
			return err
		}
		if dump && script == "pre-dump" {
			// criu asks every RPC dump for more external objects. stasis
			// cannot take them once the dump has started: refuse.
			ack, err := n.notify("query-ext-files", 0)
			if err != nil {
				return err
			}
			if ext := ack.GetOpts().GetExternal(); len(ext) > 0 {
				return fmt.Errorf("query-ext-files: external objects sent in the answer (%s): %w (set them in the DUMP's external)", strings.Join(ext, ", "), ErrNotImplemented)
			}
		}
		return nil
	}
}

// notify sends one notification and returns the client's answer, which
// must be a successful NOTIFY. pid is sent where criu sends it
// (setup-namespaces, post-restore).
func (n *notifier) notify(script string, pid int) (*rpc.CriuReq, error) {
	resp := success(rpc.CriuReqType_NOTIFY)
	resp.Notify = &rpc.CriuNotify{Script: proto.String(script)}
	if script == "setup-namespaces" || script == "post-restore" {
		resp.Notify.Pid = proto.Int32(int32(pid))
	}
	if err := n.c.send(resp); err != nil {
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
