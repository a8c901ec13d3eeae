package rpc

import (
	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/kerndat"
)

// featureCheck answers FEATURE_CHECK for what stasis can do on this
// kernel, every field present as criu sends them: true only if asked and
// supported. mem_track is where the kernel tracks writes (pre-dump,
// track_mem: predump.go); lazy_pages where userfaultfd has its
// non-cooperative events; pidfd_store needs pidfd_store_sk, which stasis
// does not implement yet, and a client that was told yes would fail later
// instead of now.
func featureCheck(asked *rpc.CriuFeatures) *rpc.CriuResp {
	resp := success(rpc.CriuReqType_FEATURE_CHECK)
	// mem_track: pre-dump and track_mem work where the kernel tracks
	// writes (PAGEMAP_SCAN with WP_ASYNC, or soft-dirty).
	track := false
	if asked.GetMemTrack() {
		track, _, _ = kerndat.CRIUFeature("mem_dirty_track")
	}
	// lazy_pages: a lazy dump and restore need userfaultfd with its
	// non-cooperative events (criu's uffd-noncoop).
	lazy := false
	if asked.GetLazyPages() {
		lazy, _, _ = kerndat.CRIUFeature("uffd-noncoop")
	}
	resp.Features = &rpc.CriuFeatures{
		MemTrack:   proto.Bool(track),
		LazyPages:  proto.Bool(lazy),
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
