package rpc

import (
	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"google.golang.org/protobuf/proto"
)

// featureCheck answers FEATURE_CHECK for what stasis can do on this
// kernel, every field present as criu sends them: true only if asked and
// supported. None is today: mem_track needs incremental dumps (pre-dump,
// track_mem; this kernel has no soft-dirty, so they would need
// PAGEMAP_SCAN), lazy_pages needs the userfaultfd page server, and
// pidfd_store needs pidfd_store_sk; stasis implements none of them yet,
// and a client that was told yes would fail later instead of now.
func featureCheck(_ *rpc.CriuFeatures) *rpc.CriuResp {
	resp := success(rpc.CriuReqType_FEATURE_CHECK)
	resp.Features = &rpc.CriuFeatures{
		MemTrack:   proto.Bool(false),
		LazyPages:  proto.Bool(false),
		PidfdStore: proto.Bool(false),
	}
	return resp
}

// check answers CHECK: success when the kernel has every feature stasis
// requires (stasis check's "Looks good.").
func (s *server) check() *rpc.CriuResp {
	if s.b.Check != nil {
		if err := s.b.Check(); err != nil {
			return failure(rpc.CriuReqType_CHECK, err)
		}
	}
	return success(rpc.CriuReqType_CHECK)
}
