package rpc

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/files"
)

// restore serves RESTORE, always detached as criu's: the reply carries
// the root's pid and the tree runs on once the server has exited.
//
// rst_sibling: the root is the client's child, as criu makes it with
// CLONE_PARENT (the swrk process splits and becomes the puppet, which
// clones it with CLONE_PARENT: splitForSibling); runc adopts it as the container's
// init and waits for it. Without it, stasis adopts the root as child
// subreaper and, when the server exits after the reply, the tree goes to
// the client's nearest child subreaper or init. The service refuses it,
// as criu does: the client is not the parent of the process serving it.
func (s *server) restore(o *rpc.CriuOpts) *rpc.CriuResp {
	resp := s.doRestore(o)
	if !resp.GetSuccess() {
		return restoreFailed(resp)
	}
	return resp
}

func (s *server) doRestore(o *rpc.CriuOpts) *rpc.CriuResp {
	fail := func(err error) *rpc.CriuResp { return failure(rpc.CriuReqType_RESTORE, err) }
	if o == nil {
		return fail(fmt.Errorf("rpc: RESTORE without options: %w", ErrBadRequest))
	}
	d, fail, failed := s.begin(rpc.CriuReqType_RESTORE, o, restoreRefused)
	if failed != nil {
		return failed
	}
	defer d.close()
	if o.GetRstSibling() && s.service {
		return fail(fmt.Errorf("rpc: rst_sibling is not allowed in standalone service: %w", ErrBadRequest))
	}
	lock, err := networkLock(o)
	if err != nil {
		return fail(err)
	}
	var inherit []files.InheritFd
	for _, in := range o.GetInheritFd() {
		// inherit_fd numbers are the server's own fds (swrk only).
		if _, err := unix.FcntlInt(uintptr(in.GetFd()), unix.F_GETFD, 0); err != nil {
			return fail(fmt.Errorf("rpc: inherit_fd %s: fd %d is not open in the server: %w", in.GetKey(), in.GetFd(), err))
		}
		inherit = append(inherit, files.InheritFd{Key: in.GetKey(), Fd: int(in.GetFd())})
	}
	r := RestoreRequest{
		ImagesDir: d.images, WorkDir: d.work, ShellJob: o.GetShellJob(), Sibling: o.GetRstSibling(),
		Unprivileged: o.GetUnprivileged(), NetworkLock: lock,
		Log: d.log, Notify: s.hook(o, false), CPUCap: cpuCaps(o), LazyPages: o.GetLazyPages(),
	}
	if err := restoreCgroups(o, &r); err != nil {
		return fail(err)
	}
	restoreMounts(o, &r)
	r.Files.InheritFds = inherit
	if r.Files.OrphanPtsMaster, err = s.orphanPtsMaster(o); err != nil {
		return fail(err)
	}
	r.Files.FileLocks = o.GetFileLocks()
	r.Files.ExtUnixSk = o.GetExtUnixSk()
	r.Files.TCPEstablished = o.GetTcpEstablished()
	r.Files.TCPClose = o.GetTcpClose()
	if r.Net, err = netRestoreOptions(o); err != nil {
		return fail(err)
	}
	d.log.Info("rpc restore", "client", s.c.peer, "images", r.ImagesDir, "work", r.WorkDir, "rst_sibling", o.GetRstSibling())
	pid, err := s.b.Restore(s.ctx, r)
	if err != nil {
		return fail(err)
	}
	s.displayStats(o, d, true)
	resp := success(rpc.CriuReqType_RESTORE)
	resp.Restore = &rpc.CriuRestoreResp{Pid: proto.Int32(int32(pid))}
	return resp
}
