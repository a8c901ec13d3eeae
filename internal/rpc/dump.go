package rpc

import (
	"fmt"

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
	if err := refuse("DUMP", o, dumpRefused); err != nil {
		return fail(err)
	}
	lock, err := networkLock(o)
	if err != nil {
		return fail(err)
	}
	d, err := openDirs(s.c.peer, o)
	if err != nil {
		return fail(err)
	}
	defer d.close()
	r := DumpRequest{
		Pid: int(o.GetPid()), ImagesDir: d.images, WorkDir: d.work,
		LeaveRunning: o.GetLeaveRunning(), LeaveStopped: o.GetLeaveStopped(),
		ShellJob: o.GetShellJob(), Unprivileged: o.GetUnprivileged(), NetworkLock: lock,
		Log: d.log, Notify: s.hook(o, true),
	}
	r.Files.FileLocks = o.GetFileLocks()
	r.Files.ExtUnixSk = o.GetExtUnixSk()
	r.Files.TCPEstablished = o.GetTcpEstablished()
	r.Files.SkipInFlight = o.GetTcpSkipInFlight()
	r.Files.LinkRemap = o.GetLinkRemap()
	r.Files.EvasiveDevices = o.GetEvasiveDevices()
	r.Files.External = o.GetExternal()
	if o.GhostLimit != nil {
		r.Files.GhostLimit = int64(o.GetGhostLimit())
	}
	d.log.Info("rpc dump", "client", s.c.peer, "pid", r.Pid, "images", r.ImagesDir, "work", r.WorkDir)
	if err := s.b.Dump(s.ctx, r); err != nil {
		d.log.Error("dump failed", "err", err)
		return fail(err)
	}
	return success(rpc.CriuReqType_DUMP)
}
