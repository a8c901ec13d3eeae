package rpc

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// waitPid answers WAIT_PID: wait for req.pid, a child of this process
// (criu's waitpid), and reply with its raw wait status.
func waitPid(req *rpc.CriuReq) *rpc.CriuResp {
	pid := int(req.GetPid())
	if req.Pid == nil || pid <= 0 {
		return failure(rpc.CriuReqType_WAIT_PID, fmt.Errorf("rpc: WAIT_PID without a pid: %w", ErrBadRequest))
	}
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return failure(rpc.CriuReqType_WAIT_PID, fmt.Errorf("rpc: wait for pid %d: %w", pid, err))
		}
		break
	}
	resp := success(rpc.CriuReqType_WAIT_PID)
	resp.Status = proto.Int32(int32(ws))
	return resp
}
