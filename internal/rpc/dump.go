package rpc

import (
	"fmt"
	"slices"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"google.golang.org/protobuf/proto"
)

// dump serves DUMP. The reply carries dump{restored=false} whatever the
// outcome, as criu's does.
func (s *server) dump(o *rpc.CriuOpts) *rpc.CriuResp {
	resp := s.doDump(o)
	resp.Dump = &rpc.CriuDumpResp{Restored: proto.Bool(false)}
	return resp
}

func (s *server) doDump(o *rpc.CriuOpts) *rpc.CriuResp {
	fail := func(err error) *rpc.CriuResp { return failure(rpc.CriuReqType_DUMP, err) }
	if o == nil {
		return fail(fmt.Errorf("rpc: DUMP without options: %w", ErrBadRequest))
	}
	if o.Pid == nil || o.GetPid() == 0 {
		// criu then dumps the client itself, which ends up restored with a
		// DUMP reply of its own (restored=true).
		return fail(fmt.Errorf("rpc: DUMP without a pid (a dump of the client itself): %w", ErrNotImplemented))
	}
	d, fail, failed := s.begin(rpc.CriuReqType_DUMP, o, dumpRefused)
	if failed != nil {
		return failed
	}
	defer d.close()
	lock, err := networkLock(o)
	if err != nil {
		return fail(err)
	}
	r := DumpRequest{
		Pid: int(o.GetPid()), ImagesDir: d.images, WorkDir: d.work,
		LeaveRunning: o.GetLeaveRunning(), LeaveStopped: o.GetLeaveStopped(),
		ShellJob: o.GetShellJob(), Unprivileged: o.GetUnprivileged(), NetworkLock: lock,
		Log: d.log, Notify: s.hook(o, true), CPUCap: cpuCaps(o), LazyPages: o.GetLazyPages(),
	}
	r.Files.FileLocks = o.GetFileLocks()
	r.Files.ExtUnixSk = o.GetExtUnixSk()
	r.Files.TCPEstablished = o.GetTcpEstablished()
	r.Files.SkipInFlight = o.GetTcpSkipInFlight()
	r.Files.TCPClose = o.GetTcpClose()
	r.Files.LinkRemap = o.GetLinkRemap()
	r.Files.EvasiveDevices = o.GetEvasiveDevices()
	r.Files.External = o.GetExternal()
	r.Files.OrphanPtsMaster = o.GetOrphanPtsMaster()
	r.Net = netDumpOptions(o)
	stdio, err := stdioExternal(r.Pid)
	if err != nil {
		return fail(err)
	}
	for _, k := range stdio {
		if !slices.Contains(r.Files.External, k) {
			d.log.Info("stdio pipe shared with the outside: external, for the runtime's inherit_fd at restore", "pipe", k)
			r.Files.External = append(r.Files.External, k)
		}
	}
	if o.GhostLimit != nil {
		r.Files.GhostLimit = int64(o.GetGhostLimit())
	}
	if r.Mem, err = memRequest(o); err != nil {
		return fail(err)
	}
	if err := dumpCgroups(o, &r); err != nil {
		return fail(err)
	}
	dumpMounts(o, &r)
	d.log.Info("rpc dump", "client", s.c.peer, "pid", r.Pid, "images", r.ImagesDir, "work", r.WorkDir)
	if err := s.b.Dump(s.ctx, r); err != nil {
		return fail(err)
	}
	s.displayStats(o, d, false)
	return success(rpc.CriuReqType_DUMP)
}
