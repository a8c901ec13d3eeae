package rpc

import (
	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"google.golang.org/protobuf/proto"
)

// The criu release whose RPC, options and images stasis implements.
// go-criu computes major*10000+minor*100+sublevel (40200); runc, podman
// and containerd require at least 30000/31100/31600. criu sets gitid only
// when built from a git tree, and go-criu then adds 100: stasis does not.
const (
	criuMajor = 4
	criuMinor = 2
)

func version() *rpc.CriuResp {
	resp := success(rpc.CriuReqType_VERSION)
	resp.Version = &rpc.CriuVersion{MajorNumber: proto.Int32(criuMajor), MinorNumber: proto.Int32(criuMinor)}
	return resp
}
