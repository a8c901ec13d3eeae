package rpc

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
)

// unsupported is the reply to a request type stasis does not serve yet,
// of the type criu would answer with (PAGE_SERVER for both page server
// requests).
func unsupported(t rpc.CriuReqType) *rpc.CriuResp {
	rt := t
	if t == rpc.CriuReqType_PAGE_SERVER_CHLD {
		rt = rpc.CriuReqType_PAGE_SERVER
	}
	return failure(rt, fmt.Errorf("rpc: %v request: %w", t, ErrNotImplemented))
}
