package rpc

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/rpc"

	"github.com/stasis-cr/stasis/internal/cpuinfo"
	"github.com/stasis-cr/stasis/internal/images"
)

// cpuCaps is a DUMP's or RESTORE's cpu_cap as criu 4.2 serves it: set
// (whatever its value, 0 too) a dump writes cpuinfo.img and a restore
// reads it and checks the bits set (fpu 1, cpu 2, ins 4); unset, neither.
func cpuCaps(o *rpc.CriuOpts) cpuinfo.Caps {
	if o.CpuCap == nil {
		return 0
	}
	return cpuinfo.Caps(o.GetCpuCap())&cpuinfo.CapAll | cpuinfo.CapImage
}

// cpuinfoReq serves CPUINFO_DUMP and CPUINFO_CHECK, replying with the
// request's type as criu does. The check takes cpu_cap's bits as they
// are: unset is rpc.proto's default, every bit (all); 0 only reads the
// image.
func (s *server) cpuinfoReq(t rpc.CriuReqType, o *rpc.CriuOpts) *rpc.CriuResp {
	if o == nil {
		return failure(t, fmt.Errorf("rpc: %v without options: %w", t, ErrBadRequest))
	}
	d, fail, failed := s.begin(t, o, nil)
	if failed != nil {
		return failed
	}
	defer d.close()
	dir, err := images.Open(d.images)
	if err != nil {
		return fail(fmt.Errorf("rpc: %v: %w", t, err))
	}
	if t == rpc.CriuReqType_CPUINFO_DUMP {
		err = cpuinfo.Dump(dir)
	} else {
		err = cpuinfo.CheckDir(dir, cpuinfo.Caps(o.GetCpuCap())&cpuinfo.CapAll|cpuinfo.CapImage)
	}
	if err != nil {
		return fail(err)
	}
	d.log.Info("rpc "+t.String()+" done", "images", d.images)
	return success(t)
}
