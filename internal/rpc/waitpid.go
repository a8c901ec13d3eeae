package rpc

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/linux"
)

// waitPid answers WAIT_PID: wait for req.pid, a child of this process
// (criu's waitpid), and reply with its raw wait status.
func waitPid(req *rpc.CriuReq) *rpc.CriuResp {
	pid := int(req.GetPid())
	if req.Pid == nil || pid <= 0 {
		return failure(rpc.CriuReqType_WAIT_PID, fmt.Errorf("rpc: WAIT_PID without a pid: %w", ErrBadRequest))
	}
	var ws unix.WaitStatus
	if _, err := linux.Wait4(pid, &ws, 0); err != nil {
		return failure(rpc.CriuReqType_WAIT_PID, fmt.Errorf("rpc: wait for pid %d: %w", pid, err))
	}
	resp := success(rpc.CriuReqType_WAIT_PID)
	resp.Status = proto.Int32(int32(ws))
	return resp
}
